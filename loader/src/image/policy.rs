//! The guest policy an image declares for each platform it serves.
//!
//! Each platform gets one IGVM initialization header `IGVM_VHT_GUEST_POLICY` (type
//! 0x101, body `IGVM_VHS_GUEST_POLICY`: the policy as a `u64`, the compatibility mask,
//! a reserved `u32` that is zero; `igvm_defs` 0.5) on that platform's compatibility
//! mask. What the `u64` means depends on the platform (`igvm_defs` 0.5 documents it as
//! `SnpPolicy` for SEV-SNP and `TdxPolicy` for TDX):
//!
//! * SEV-SNP: the guest policy SNP_LAUNCH_START takes and every attestation report
//!   carries as POLICY (docs/specs.md 4.3). nacre asks for ABI 0.0 at least, allows SMT, sets
//!   the reserved bit 17 that must be 1, and sets DEBUG (bit 19) only for a debuggable
//!   image: [`DEFAULT_SNP_POLICY`] (0x30000) or [`DEBUG_SNP_POLICY`] (0xB0000).
//! * TDX: bit 0 DEBUG_ALLOWED, bit 1 SEPT_VE_DISABLE, bit 2 MIGRATABLE, the others
//!   reserved (`igvm_defs` 0.5 `TdxPolicy`). Each stands for the TD attribute of the same
//!   name (docs/specs.md 6.4; [`td_attributes`]), which TDG.VP.INFO and the TD report give
//!   the guest and a verifier. nacre always sets SEPT_VE_DISABLE, sets DEBUG_ALLOWED
//!   only for a debuggable image and never sets MIGRATABLE: [`DEFAULT_TDX_POLICY`] (2)
//!   or [`DEBUG_TDX_POLICY`] (3), so the TD attributes are SEPT_VE_DISABLE, with DEBUG
//!   for a debuggable image.
//!
//!   SEPT_VE_DISABLE is what the firmware needs: it has no #VE handler, and accepts
//!   private memory before it uses it, so a guest access to a page that is not (or no
//!   longer) accepted must not become a #VE inside the TD, where the host could raise
//!   it at any instruction; with the attribute set the TDX module turns it into an
//!   EPT-violation exit to the host, which can only stop the TD. The emulated TDX MMU
//!   behaves that way (it stops the TD with exit status 120). Verifiers expect the
//!   attribute too: dcap-qvl refuses a TD quote without it, and a Linux TD guest
//!   refuses to boot without it unless it is debuggable (`arch/x86/coco/tdx/tdx.c`).
//!
//! The policy is not part of either launch measurement: the SEV-SNP launch digest and
//! the TDX MRTD cover the pages (and the VMSA) only, and neither is the boot
//! information's image digest. It reaches a verifier in its own report field (SEV-SNP
//! POLICY, TDX TD_ATTRIBUTES), which is where a debuggable guest is told apart;
//! `nacre verify --image` compares it with what the image declares.
//!
//! An image without a policy header (packaged before nacre wrote one) has the default,
//! non-debug policy of its platform. A policy with reserved or unknown bits set, an
//! SEV-SNP policy with bit 17 clear, two policies for one platform or a policy whose
//! compatibility mask is not exactly one of the file's platforms is refused.

use igvm::IgvmInitializationHeader;
use igvm_defs::{SnpPolicy, TdxPolicy};
use nacre_shared_abi::boot::PlatformKind;
use nacre_shared_abi::snp::report::GuestPolicy;
use nacre_shared_abi::tdx::attributes;

use super::{ImageError, SNP_MASK, TDX_MASK};

/// The SEV-SNP guest policy of a nacre image (docs/specs.md 4.3): ABI 0.0, SMT allowed
/// (bit 16), the reserved bit 17 set (it must be 1), MIGRATE_MA (bit 18) and
/// SINGLE_SOCKET (bit 20) clear, DEBUG (bit 19) as `debug` says.
pub const fn snp_policy(debug: bool) -> u64 {
    SnpPolicy::new()
        .with_abi_minor(0)
        .with_abi_major(0)
        .with_smt(1)
        .with_reserved_must_be_one(1)
        .with_migrate_ma(0)
        .with_debug(debug as u8)
        .with_single_socket(0)
        .into_bits()
}

/// The TDX policy of a nacre image (`igvm_defs` 0.5 `TdxPolicy`): DEBUG_ALLOWED as
/// `debug` says, SEPT_VE_DISABLE set, MIGRATABLE clear (module documentation).
pub const fn tdx_policy(debug: bool) -> u64 {
    TdxPolicy::new()
        .with_debug_allowed(debug as u8)
        .with_sept_ve_disable(1)
        .with_migratable(0)
        .into_bits()
}

/// The SEV-SNP policy of an image that is not debuggable, and of one that declares no
/// policy: 0x30000 (docs/specs.md 4.3, "typical value").
pub const DEFAULT_SNP_POLICY: u64 = snp_policy(false);

/// The SEV-SNP policy of an image packaged with `--debug`: 0xB0000.
pub const DEBUG_SNP_POLICY: u64 = snp_policy(true);

/// The TDX policy of an image that is not debuggable, and of one that declares no
/// policy: 2 (SEPT_VE_DISABLE).
pub const DEFAULT_TDX_POLICY: u64 = tdx_policy(false);

/// The TDX policy of an image packaged with `--debug`: 3 (DEBUG_ALLOWED and
/// SEPT_VE_DISABLE).
pub const DEBUG_TDX_POLICY: u64 = tdx_policy(true);

const _: () = assert!(DEFAULT_SNP_POLICY == 0x3_0000);
const _: () = assert!(DEBUG_SNP_POLICY == 0xB_0000);
const _: () = assert!(DEFAULT_TDX_POLICY == 2);
const _: () = assert!(DEBUG_TDX_POLICY == 3);
// The `igvm_defs` layout agrees with docs/specs.md 4.3 as `nacre_shared_abi` spells it.
const _: () = assert!(DEBUG_SNP_POLICY ^ DEFAULT_SNP_POLICY == GuestPolicy::DEBUG);
const _: () = assert!(DEFAULT_SNP_POLICY == GuestPolicy::SMT | GuestPolicy::RESERVED_MUST_BE_ONE);

/// The SEV-SNP policy bits docs/specs.md 4.3 defines: ABI minor and major (15:0), SMT,
/// the reserved bit 17, MIGRATE_MA, DEBUG, SINGLE_SOCKET, CXL_ALLOW, MEM_AES_256_XTS,
/// RAPL_DIS, CIPHERTEXT_HIDING_DRAM and PAGE_SWAP_DISABLE (25:16). Bits 63:26 are
/// reserved.
const SNP_KNOWN_BITS: u64 = 0xFFFF
    | GuestPolicy::SMT
    | GuestPolicy::RESERVED_MUST_BE_ONE
    | GuestPolicy::MIGRATE_MA
    | GuestPolicy::DEBUG
    | GuestPolicy::SINGLE_SOCKET
    | GuestPolicy::CXL_ALLOW
    | GuestPolicy::MEM_AES_256_XTS
    | GuestPolicy::RAPL_DIS
    | GuestPolicy::CIPHERTEXT_HIDING_DRAM
    | GuestPolicy::PAGE_SWAP_DISABLE;

const _: () = assert!(SNP_KNOWN_BITS == (1 << 26) - 1);

/// `TdxPolicy` bit 0: DEBUG_ALLOWED.
const TDX_DEBUG_ALLOWED: u64 = TdxPolicy::new().with_debug_allowed(1).into_bits();
/// `TdxPolicy` bit 1: SEPT_VE_DISABLE.
const TDX_SEPT_VE_DISABLE: u64 = TdxPolicy::new().with_sept_ve_disable(1).into_bits();
/// `TdxPolicy` bit 2: MIGRATABLE.
const TDX_MIGRATABLE: u64 = TdxPolicy::new().with_migratable(1).into_bits();

/// The TDX policy bits `igvm_defs` 0.5 defines; bits 63:3 are reserved.
const TDX_KNOWN_BITS: u64 = TDX_DEBUG_ALLOWED | TDX_SEPT_VE_DISABLE | TDX_MIGRATABLE;

const _: () = assert!(TDX_KNOWN_BITS == 0b111);

/// The default (non-debug) policy of `platform`, which an image without a policy
/// header has.
pub const fn default_policy(platform: PlatformKind) -> u64 {
    match platform {
        PlatformKind::Snp => DEFAULT_SNP_POLICY,
        PlatformKind::Tdx => DEFAULT_TDX_POLICY,
    }
}

/// Whether `policy`, a policy of `platform`, lets the host debug the guest (read and
/// change its memory and state): SEV-SNP DEBUG, TDX DEBUG_ALLOWED.
pub const fn policy_allows_debug(platform: PlatformKind, policy: u64) -> bool {
    match platform {
        PlatformKind::Snp => policy & GuestPolicy::DEBUG != 0,
        PlatformKind::Tdx => policy & TDX_DEBUG_ALLOWED != 0,
    }
}

/// The TD attributes (docs/specs.md 6.4) a TDX `policy` asks for: DEBUG, SEPT_VE_DISABLE and
/// MIGRATABLE for the policy bits of the same names. Reserved policy bits give nothing
/// ([`super::load_image`] refuses a policy with any set).
pub const fn td_attributes(policy: u64) -> u64 {
    let mut out = 0;
    if policy & TDX_DEBUG_ALLOWED != 0 {
        out |= attributes::DEBUG;
    }
    if policy & TDX_SEPT_VE_DISABLE != 0 {
        out |= attributes::SEPT_VE_DISABLE;
    }
    if policy & TDX_MIGRATABLE != 0 {
        out |= attributes::MIGRATABLE;
    }
    out
}

/// The policy headers of an image: SEV-SNP always, TDX when the image serves TDX.
pub(super) fn policy_headers(debug: bool, tdx: bool) -> Vec<IgvmInitializationHeader> {
    let mut headers = vec![IgvmInitializationHeader::GuestPolicy {
        policy: snp_policy(debug),
        compatibility_mask: SNP_MASK,
    }];
    if tdx {
        headers.push(IgvmInitializationHeader::GuestPolicy {
            policy: tdx_policy(debug),
            compatibility_mask: TDX_MASK,
        });
    }
    headers
}

/// Check a declared policy of `platform`.
fn check(platform: PlatformKind, policy: u64) -> Result<(), ImageError> {
    let known = match platform {
        PlatformKind::Snp => SNP_KNOWN_BITS,
        PlatformKind::Tdx => TDX_KNOWN_BITS,
    };
    let unknown = policy & !known;
    if unknown != 0 {
        return Err(ImageError::GuestPolicyUnknownBits {
            platform,
            policy,
            bits: unknown,
        });
    }
    if platform == PlatformKind::Snp && policy & GuestPolicy::RESERVED_MUST_BE_ONE == 0 {
        return Err(ImageError::GuestPolicyReservedBitClear { policy });
    }
    Ok(())
}

/// The policies a file declares, by platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Policies {
    snp: Option<u64>,
    tdx: Option<u64>,
}

impl Policies {
    /// Read and check every policy header of a file whose SEV-SNP and TDX platforms
    /// are on `snp_mask` and `tdx_mask` (`None`: the file does not declare it). Every
    /// policy is checked, not only the one of the platform being loaded: a malformed
    /// header makes the whole file malformed, as with the platform headers.
    pub(super) fn read(
        headers: &[IgvmInitializationHeader],
        snp_mask: Option<u32>,
        tdx_mask: Option<u32>,
    ) -> Result<Self, ImageError> {
        let mut policies = Self::default();
        for header in headers {
            let IgvmInitializationHeader::GuestPolicy {
                policy,
                compatibility_mask,
            } = header
            else {
                // The prescan lets no other initialization header through.
                return Err(ImageError::Corrupt {
                    reason: "an initialization header is not a guest policy",
                });
            };
            let mask = Some(*compatibility_mask);
            let (platform, slot) = if mask == snp_mask {
                (PlatformKind::Snp, &mut policies.snp)
            } else if mask == tdx_mask {
                (PlatformKind::Tdx, &mut policies.tdx)
            } else {
                return Err(ImageError::GuestPolicyMask {
                    mask: *compatibility_mask,
                });
            };
            if slot.is_some() {
                return Err(ImageError::DuplicateGuestPolicy { platform });
            }
            check(platform, *policy)?;
            *slot = Some(*policy);
        }
        Ok(policies)
    }

    /// The policy of `platform`: the declared one, else [`default_policy`].
    pub(super) fn of(&self, platform: PlatformKind) -> u64 {
        let declared = match platform {
            PlatformKind::Snp => self.snp,
            PlatformKind::Tdx => self.tdx,
        };
        declared.unwrap_or(default_policy(platform))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(policy: u64, compatibility_mask: u32) -> IgvmInitializationHeader {
        IgvmInitializationHeader::GuestPolicy {
            policy,
            compatibility_mask,
        }
    }

    const BOTH: (Option<u32>, Option<u32>) = (Some(SNP_MASK), Some(TDX_MASK));

    fn read(headers: &[IgvmInitializationHeader]) -> Result<Policies, ImageError> {
        Policies::read(headers, BOTH.0, BOTH.1)
    }

    #[test]
    fn snp_policy_bits_are_spec_positions() {
        // docs/specs.md 4.3: bit 16 SMT, bit 17 reserved (must be 1), bit 19 DEBUG.
        assert_eq!(snp_policy(false), (1 << 16) | (1 << 17));
        assert_eq!(snp_policy(true), (1 << 16) | (1 << 17) | (1 << 19));
        assert!(!policy_allows_debug(PlatformKind::Snp, DEFAULT_SNP_POLICY));
        assert!(policy_allows_debug(PlatformKind::Snp, DEBUG_SNP_POLICY));
        assert!(GuestPolicy(DEBUG_SNP_POLICY).debug());
        assert!(GuestPolicy(DEFAULT_SNP_POLICY).reserved_bit_set());
        assert_eq!(GuestPolicy(DEBUG_SNP_POLICY).abi_major(), 0);
        assert_eq!(GuestPolicy(DEBUG_SNP_POLICY).abi_minor(), 0);
    }

    #[test]
    fn tdx_policy_maps_to_td_attributes() {
        assert_eq!(
            td_attributes(DEFAULT_TDX_POLICY),
            attributes::SEPT_VE_DISABLE
        );
        assert_eq!(
            td_attributes(DEBUG_TDX_POLICY),
            attributes::DEBUG | attributes::SEPT_VE_DISABLE
        );
        assert_eq!(td_attributes(0b010), attributes::SEPT_VE_DISABLE);
        assert_eq!(td_attributes(0b100), attributes::MIGRATABLE);
        // docs/specs.md 6.4: DEBUG is bit 0, SEPT_VE_DISABLE bit 28, MIGRATABLE bit 29.
        assert_eq!(td_attributes(0b111), 1 | (1 << 28) | (1 << 29));
        assert!(!policy_allows_debug(PlatformKind::Tdx, DEFAULT_TDX_POLICY));
        assert!(policy_allows_debug(PlatformKind::Tdx, DEBUG_TDX_POLICY));
    }

    #[test]
    fn headers_carry_each_platforms_policy() {
        for debug in [false, true] {
            let both = policy_headers(debug, true);
            assert_eq!(
                both,
                [
                    header(snp_policy(debug), SNP_MASK),
                    header(tdx_policy(debug), TDX_MASK)
                ]
            );
            let policies = read(&both).unwrap();
            assert_eq!(policies.of(PlatformKind::Snp), snp_policy(debug));
            assert_eq!(policies.of(PlatformKind::Tdx), tdx_policy(debug));
            let snp_only = policy_headers(debug, false);
            assert_eq!(snp_only, [header(snp_policy(debug), SNP_MASK)]);
            let policies = Policies::read(&snp_only, Some(SNP_MASK), None).unwrap();
            assert_eq!(policies.of(PlatformKind::Snp), snp_policy(debug));
        }
    }

    #[test]
    fn no_header_is_the_default_policy() {
        let policies = read(&[]).unwrap();
        assert_eq!(policies.of(PlatformKind::Snp), DEFAULT_SNP_POLICY);
        assert_eq!(policies.of(PlatformKind::Tdx), DEFAULT_TDX_POLICY);
        // One platform declared, the other not.
        let policies = read(&[header(DEBUG_TDX_POLICY, TDX_MASK)]).unwrap();
        assert_eq!(policies.of(PlatformKind::Snp), DEFAULT_SNP_POLICY);
        assert_eq!(policies.of(PlatformKind::Tdx), DEBUG_TDX_POLICY);
    }

    #[test]
    fn every_known_bit_is_accepted() {
        // Whatever the ABI version and whichever defined flags.
        assert!(read(&[header(SNP_KNOWN_BITS, SNP_MASK)]).is_ok());
        assert!(read(&[header(GuestPolicy::RESERVED_MUST_BE_ONE, SNP_MASK)]).is_ok());
        assert!(read(&[header(TDX_KNOWN_BITS, TDX_MASK)]).is_ok());
    }

    #[test]
    fn unknown_bits_are_refused() {
        for bit in 26..64 {
            let policy = DEFAULT_SNP_POLICY | 1 << bit;
            let err = read(&[header(policy, SNP_MASK)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::GuestPolicyUnknownBits { platform: PlatformKind::Snp, policy: p, bits }
                        if p == policy && bits == 1 << bit
                ),
                "{bit}: {err:?}"
            );
            assert!(err.to_string().contains("SEV-SNP"), "{err}");
        }
        for bit in 3..64 {
            let err = read(&[header(1 << bit, TDX_MASK)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::GuestPolicyUnknownBits { platform: PlatformKind::Tdx, bits, .. }
                        if bits == 1 << bit
                ),
                "{bit}: {err:?}"
            );
            assert!(err.to_string().contains("TDX"), "{err}");
        }
    }

    #[test]
    fn snp_reserved_bit_must_be_one() {
        let policy = DEBUG_SNP_POLICY & !GuestPolicy::RESERVED_MUST_BE_ONE;
        let err = read(&[header(policy, SNP_MASK)]).unwrap_err();
        assert!(
            matches!(err, ImageError::GuestPolicyReservedBitClear { policy: p } if p == policy),
            "{err:?}"
        );
        assert!(err.to_string().contains("bit 17"), "{err}");
        // TDX has no such bit.
        assert!(read(&[header(0, TDX_MASK)]).is_ok());
    }

    #[test]
    fn one_policy_per_platform() {
        for mask in [SNP_MASK, TDX_MASK] {
            let platform = if mask == SNP_MASK {
                PlatformKind::Snp
            } else {
                PlatformKind::Tdx
            };
            let policy = default_policy(platform);
            let err = read(&[header(policy, mask), header(policy, mask)]).unwrap_err();
            assert!(
                matches!(err, ImageError::DuplicateGuestPolicy { platform: p } if p == platform),
                "{err:?}"
            );
        }
    }

    #[test]
    fn the_mask_is_exactly_one_platform() {
        for mask in [0, SNP_MASK | TDX_MASK, 4, u32::MAX] {
            let err = read(&[header(DEFAULT_SNP_POLICY, mask)]).unwrap_err();
            assert!(
                matches!(err, ImageError::GuestPolicyMask { mask: m } if m == mask),
                "{mask:#x}: {err:?}"
            );
        }
        // TDX's mask in a file that does not serve TDX.
        let err = Policies::read(
            &[header(DEFAULT_TDX_POLICY, TDX_MASK)],
            Some(SNP_MASK),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, ImageError::GuestPolicyMask { mask: TDX_MASK }),
            "{err:?}"
        );
    }
}
