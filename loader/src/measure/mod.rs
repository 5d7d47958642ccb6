//! Launch measurements as the platforms compute them while the host adds pages: the
//! SEV-SNP launch digest and ID block ([`snp`]) and the TDX MRTD ([`tdx`]). Which
//! pages an image adds, in which order and as what, is [`crate::image`]'s
//! ([`crate::LoadedImage::launch_digest`], [`crate::LoadedImage::mrtd`],
//! [`crate::LoadedImage::measured_regions`]).

pub mod snp;
pub mod tdx;

/// Size of a launch measurement: SHA-384, 48 bytes, on both platforms.
pub const MEASUREMENT_SIZE: usize = 48;

/// The known-answer vectors the tests reproduce.
#[cfg(test)]
pub(crate) mod vectors {
    use std::path::PathBuf;

    /// The folder `name` of the known-answer vectors: the unmodified copies in
    /// `tests/vectors` (see its README), or under the folder `NACRE_VECTORS` names.
    /// Missing vectors fail the tests.
    pub(crate) fn dir(name: &str) -> PathBuf {
        let base = std::env::var_os("NACRE_VECTORS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors"),
            PathBuf::from,
        );
        let dir = base.join(name);
        assert!(
            dir.is_dir(),
            "the test vectors are missing: {} (set NACRE_VECTORS to the vectors folder)",
            dir.display()
        );
        dir
    }

    /// The bytes `hex` spells (an even number of hexadecimal digits).
    pub(crate) fn unhex(hex: &str) -> Vec<u8> {
        assert!(hex.len().is_multiple_of(2), "odd-length hex {hex:?}");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
            .collect()
    }

    /// A hexadecimal number with or without `0x`, or a JSON number.
    pub(crate) fn parse_u64(v: &serde_json::Value) -> u64 {
        match v {
            serde_json::Value::String(s) => {
                u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
            }
            other => other.as_u64().expect("number"),
        }
    }
}
