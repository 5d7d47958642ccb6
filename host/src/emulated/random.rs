//! The emulated hardware's one source of randomness: the kernel's, through the
//! `getrandom` crate. Keys, message keys, report IDs and certificate serials of the
//! emulated platforms come from here (the guest itself never takes randomness from
//! the host: its firmware uses RDRAND).

/// Fill `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::getrandom(buf)
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// A generator over the same source, for the key generation and signing that take
/// one (RSA, ECDSA, RSA-PSS): `rand_core`'s `OsRng` reads `getrandom` too.
pub fn rng() -> rand_core::OsRng {
    rand_core::OsRng
}
