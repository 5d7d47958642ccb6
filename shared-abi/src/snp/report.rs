//! The SEV-SNP ATTESTATION_REPORT (0x4A0 bytes, versions 2 to 5), its signature, the
//! guest policy and TCB_VERSION.
//!
//! Layout: the SNP firmware ABI as implemented by go-sev-guest `abi/abi.go`
//! (`ReportToProto`, `ReportToAbiBytes`, authoritative for the v3 and v5 fields) and
//! COCONUT-SVSM `kernel/src/greq/pld_report.rs`; docs/specs.md 4.2. Guest policy bits:
//! go-sev-guest `abi/abi.go` (docs/specs.md 4.3). TCB_VERSION layouts per product: virtee/sev
//! `src/firmware/host/types/snp.rs` (docs/specs.md 4.4).
//!
//! Every multi-byte integer is little-endian, and so are the signature's R and S
//! (zero-padded to 72 bytes each).

use core::fmt;
use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of an attestation report (docs/specs.md 4.2; `MSG_REPORT_RSP` report_size).
pub const ATTESTATION_REPORT_SIZE: usize = 0x4A0;
/// The signature covers bytes `[0, SIGNED_SIZE)` of the report (docs/specs.md 4.2).
pub const SIGNED_SIZE: usize = 0x2A0;
/// Oldest report version this layout describes (docs/specs.md 4.2).
pub const REPORT_VERSION_MIN: u32 = 2;
/// Newest report version this layout describes (docs/specs.md 4.2).
pub const REPORT_VERSION_MAX: u32 = 5;
/// `signature_algo` 1: ECDSA P-384 with SHA-384 (docs/specs.md 4.2).
pub const SIGNATURE_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Size of each of R and S in the signature: little-endian, zero-padded (docs/specs.md 4.2).
pub const ECDSA_P384_COMPONENT_SIZE: usize = 72;
/// Significant bytes of a P-384 scalar.
pub const P384_SCALAR_SIZE: usize = 48;

/// The ATTESTATION_REPORT structure (docs/specs.md 4.2).
///
/// Fields that appeared in later versions read as zero in earlier ones, where they
/// are reserved: see [`AttestationReport::first_nonzero_reserved`].
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AttestationReport {
    /// Report version, 2 to 5 (0x000).
    pub version: u32,
    /// Guest SVN from the ID block (0x004).
    pub guest_svn: u32,
    /// Guest policy (0x008), see [`GuestPolicy`].
    pub policy: u64,
    /// Family ID from the ID block (0x010).
    pub family_id: [u8; 16],
    /// Image ID from the ID block (0x020).
    pub image_id: [u8; 16],
    /// VMPL of the request (0x030).
    pub vmpl: u32,
    /// Signature algorithm (0x034); 1 is ECDSA P-384 with SHA-384.
    pub signature_algo: u32,
    /// Current TCB_VERSION of the platform (0x038), see [`TcbVersion`].
    pub current_tcb: u64,
    /// Platform information (0x040): bit 0 SMT_EN, 1 TSME_EN, 2 ECC_EN, 3 RAPL_DIS,
    /// 4 CIPHERTEXT_HIDING_EN, 5 ALIAS_CHECK_COMPLETE, 7 TIO_EN.
    pub platform_info: u64,
    /// Signer information (0x048), see [`SignerInfo`].
    pub signer_info: u32,
    reserved_04c: u32,
    /// Data the guest supplied with the request (0x050).
    pub report_data: [u8; 64],
    /// Launch digest (0x090).
    pub measurement: [u8; 48],
    /// Data the host supplied at SNP_LAUNCH_FINISH (0x0C0).
    pub host_data: [u8; 32],
    /// SHA-384 of the ID public key (0x0E0).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author public key (0x110).
    pub author_key_digest: [u8; 48],
    /// Report ID of the guest (0x140).
    pub report_id: [u8; 32],
    /// Report ID of the migration agent, all ones without one (0x160).
    pub report_id_ma: [u8; 32],
    /// TCB_VERSION the VCEK that signed this report was derived from (0x180).
    pub reported_tcb: u64,
    /// CPUID family ID (0x188; version 3 and later, reserved before).
    pub cpuid_fam_id: u8,
    /// CPUID model ID (0x189; version 3 and later).
    pub cpuid_mod_id: u8,
    /// CPUID stepping (0x18A; version 3 and later).
    pub cpuid_step: u8,
    reserved_18b: [u8; 0x15],
    /// Chip identifier (0x1A0): 64 bytes on Milan and Genoa, the first 8 on Turin;
    /// zero when the chip key is masked.
    pub chip_id: [u8; 64],
    /// Committed TCB_VERSION (0x1E0).
    pub committed_tcb: u64,
    /// Current firmware build (0x1E8).
    pub current_build: u8,
    /// Current firmware minor version (0x1E9).
    pub current_minor: u8,
    /// Current firmware major version (0x1EA).
    pub current_major: u8,
    reserved_1eb: u8,
    /// Committed firmware build (0x1EC).
    pub committed_build: u8,
    /// Committed firmware minor version (0x1ED).
    pub committed_minor: u8,
    /// Committed firmware major version (0x1EE).
    pub committed_major: u8,
    reserved_1ef: u8,
    /// TCB_VERSION at launch (0x1F0).
    pub launch_tcb: u64,
    /// Mitigation vector at launch (0x1F8; version 5, reserved before).
    pub launch_mit_vector: u64,
    /// Current mitigation vector (0x200; version 5, reserved before).
    pub current_mit_vector: u64,
    reserved_208: [u8; 0x98],
    /// The signature over bytes `[0, 0x2A0)` (0x2A0).
    pub signature: ReportSignature,
}

/// The report's signature area (0x200 bytes at 0x2A0): ECDSA P-384 R and S,
/// little-endian and zero-padded to 72 bytes each, then reserved bytes (docs/specs.md 4.2).
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportSignature {
    /// R, little-endian, zero-padded (0x2A0 in the report).
    pub r: [u8; ECDSA_P384_COMPONENT_SIZE],
    /// S, little-endian, zero-padded (0x2E8 in the report).
    pub s: [u8; ECDSA_P384_COMPONENT_SIZE],
    reserved: [u8; 0x170],
}

const _: () = assert!(size_of::<AttestationReport>() == ATTESTATION_REPORT_SIZE);
const _: () = assert!(offset_of!(AttestationReport, version) == 0x000);
const _: () = assert!(offset_of!(AttestationReport, guest_svn) == 0x004);
const _: () = assert!(offset_of!(AttestationReport, policy) == 0x008);
const _: () = assert!(offset_of!(AttestationReport, family_id) == 0x010);
const _: () = assert!(offset_of!(AttestationReport, image_id) == 0x020);
const _: () = assert!(offset_of!(AttestationReport, vmpl) == 0x030);
const _: () = assert!(offset_of!(AttestationReport, signature_algo) == 0x034);
const _: () = assert!(offset_of!(AttestationReport, current_tcb) == 0x038);
const _: () = assert!(offset_of!(AttestationReport, platform_info) == 0x040);
const _: () = assert!(offset_of!(AttestationReport, signer_info) == 0x048);
const _: () = assert!(offset_of!(AttestationReport, reserved_04c) == 0x04C);
const _: () = assert!(offset_of!(AttestationReport, report_data) == 0x050);
const _: () = assert!(offset_of!(AttestationReport, measurement) == 0x090);
const _: () = assert!(offset_of!(AttestationReport, host_data) == 0x0C0);
const _: () = assert!(offset_of!(AttestationReport, id_key_digest) == 0x0E0);
const _: () = assert!(offset_of!(AttestationReport, author_key_digest) == 0x110);
const _: () = assert!(offset_of!(AttestationReport, report_id) == 0x140);
const _: () = assert!(offset_of!(AttestationReport, report_id_ma) == 0x160);
const _: () = assert!(offset_of!(AttestationReport, reported_tcb) == 0x180);
const _: () = assert!(offset_of!(AttestationReport, cpuid_fam_id) == 0x188);
const _: () = assert!(offset_of!(AttestationReport, cpuid_mod_id) == 0x189);
const _: () = assert!(offset_of!(AttestationReport, cpuid_step) == 0x18A);
const _: () = assert!(offset_of!(AttestationReport, reserved_18b) == 0x18B);
const _: () = assert!(offset_of!(AttestationReport, chip_id) == 0x1A0);
const _: () = assert!(offset_of!(AttestationReport, committed_tcb) == 0x1E0);
const _: () = assert!(offset_of!(AttestationReport, current_build) == 0x1E8);
const _: () = assert!(offset_of!(AttestationReport, current_minor) == 0x1E9);
const _: () = assert!(offset_of!(AttestationReport, current_major) == 0x1EA);
const _: () = assert!(offset_of!(AttestationReport, reserved_1eb) == 0x1EB);
const _: () = assert!(offset_of!(AttestationReport, committed_build) == 0x1EC);
const _: () = assert!(offset_of!(AttestationReport, committed_minor) == 0x1ED);
const _: () = assert!(offset_of!(AttestationReport, committed_major) == 0x1EE);
const _: () = assert!(offset_of!(AttestationReport, reserved_1ef) == 0x1EF);
const _: () = assert!(offset_of!(AttestationReport, launch_tcb) == 0x1F0);
const _: () = assert!(offset_of!(AttestationReport, launch_mit_vector) == 0x1F8);
const _: () = assert!(offset_of!(AttestationReport, current_mit_vector) == 0x200);
const _: () = assert!(offset_of!(AttestationReport, reserved_208) == 0x208);
const _: () = assert!(offset_of!(AttestationReport, signature) == SIGNED_SIZE);
const _: () = assert!(size_of::<ReportSignature>() == 0x200);
const _: () =
    assert!(offset_of!(AttestationReport, signature) + offset_of!(ReportSignature, r) == 0x2A0);
const _: () =
    assert!(offset_of!(AttestationReport, signature) + offset_of!(ReportSignature, s) == 0x2E8);
const _: () = assert!(
    offset_of!(AttestationReport, signature) + offset_of!(ReportSignature, reserved) == 0x330
);

/// Reserved byte ranges of the report that are zero in every version (docs/specs.md 4.2, 8).
const RESERVED_ALWAYS: [(usize, usize); 6] = [
    (0x04C, 0x050),
    (0x18B, 0x1A0),
    (0x1EB, 0x1EC),
    (0x1EF, 0x1F0),
    (0x208, SIGNED_SIZE),
    (0x330, ATTESTATION_REPORT_SIZE),
];
/// CPUID family, model and stepping: reserved in version 2 (docs/specs.md 4.2).
const CPUID_FMS: (usize, usize) = (0x188, 0x18B);
/// The mitigation vectors: reserved before version 5 (docs/specs.md 4.2).
const MIT_VECTORS: (usize, usize) = (0x1F8, 0x208);

/// Why bytes are not an attestation report this layout describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportError {
    /// Not exactly [`ATTESTATION_REPORT_SIZE`] bytes.
    Size(usize),
    /// A version other than 2 to 5.
    Version(u32),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(
                f,
                "an SNP attestation report is {ATTESTATION_REPORT_SIZE:#x} bytes, not {n:#x}"
            ),
            Self::Version(v) => write!(
                f,
                "SNP attestation report version {v} is not supported (versions \
                 {REPORT_VERSION_MIN} to {REPORT_VERSION_MAX} are)"
            ),
        }
    }
}

impl AttestationReport {
    /// Read a report from exactly [`ATTESTATION_REPORT_SIZE`] bytes of a version
    /// from 2 to 5.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportError> {
        let report = Self::read_from_bytes(bytes).map_err(|_| ReportError::Size(bytes.len()))?;
        if !(REPORT_VERSION_MIN..=REPORT_VERSION_MAX).contains(&report.version) {
            return Err(ReportError::Version(report.version));
        }
        Ok(report)
    }

    /// The bytes the signature covers, `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.as_bytes()[..SIGNED_SIZE]
    }

    /// The guest policy.
    pub fn guest_policy(&self) -> GuestPolicy {
        GuestPolicy(self.policy)
    }

    /// The signer information.
    pub fn signer(&self) -> SignerInfo {
        SignerInfo(self.signer_info)
    }

    /// Offset of the first byte that this report's version reserves (must be zero)
    /// but that is not zero, including `signer_info` bits 31:5 and the bytes of the
    /// signature area after S. `None` when all are zero.
    pub fn first_nonzero_reserved(&self) -> Option<usize> {
        let bytes = self.as_bytes();
        let mut ranges = [None; RESERVED_ALWAYS.len() + 2];
        for (slot, range) in ranges.iter_mut().zip(RESERVED_ALWAYS) {
            *slot = Some(range);
        }
        if self.version < 3 {
            ranges[RESERVED_ALWAYS.len()] = Some(CPUID_FMS);
        }
        if self.version < 5 {
            ranges[RESERVED_ALWAYS.len() + 1] = Some(MIT_VECTORS);
        }
        let signer = (self.signer().reserved() != 0).then_some(offset_of!(Self, signer_info));
        ranges
            .into_iter()
            .flatten()
            .filter_map(|(start, end)| {
                bytes[start..end]
                    .iter()
                    .position(|&b| b != 0)
                    .map(|i| start + i)
            })
            .chain(signer)
            .min()
    }
}

impl ReportSignature {
    /// R as a big-endian P-384 scalar; `None` if the padding above the 48
    /// significant bytes is not zero.
    pub fn r_big_endian(&self) -> Option<[u8; P384_SCALAR_SIZE]> {
        le_padded_to_be(&self.r)
    }

    /// S as a big-endian P-384 scalar; `None` if the padding above the 48
    /// significant bytes is not zero.
    pub fn s_big_endian(&self) -> Option<[u8; P384_SCALAR_SIZE]> {
        le_padded_to_be(&self.s)
    }
}

fn le_padded_to_be(le: &[u8; ECDSA_P384_COMPONENT_SIZE]) -> Option<[u8; P384_SCALAR_SIZE]> {
    let (value, padding) = le.split_at(P384_SCALAR_SIZE);
    if padding.iter().any(|&b| b != 0) {
        return None;
    }
    let mut be = [0u8; P384_SCALAR_SIZE];
    for (dst, src) in be.iter_mut().zip(value.iter().rev()) {
        *dst = *src;
    }
    Some(be)
}

/// The guest policy (u64; docs/specs.md 4.3, go-sev-guest `abi/abi.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 16: SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be 1.
    pub const RESERVED_MUST_BE_ONE: u64 = 1 << 17;
    /// Bit 18: association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging allowed (the host can read and write guest memory).
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: single socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// Bit 21: CXL may be populated with guest memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Bit 22: AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Bit 23: running power limit (RAPL) must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Bit 24: ciphertext hiding for DRAM required.
    pub const CIPHERTEXT_HIDING_DRAM: u64 = 1 << 24;
    /// Bit 25: guest page swapping disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;

    /// Bits 7:0, the lowest ABI minor version the guest accepts.
    pub const fn abi_minor(self) -> u8 {
        (self.0 & 0xFF) as u8
    }

    /// Bits 15:8, the lowest ABI major version the guest accepts.
    pub const fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xFF) as u8
    }

    /// Whether every bit of `mask` is set.
    pub const fn has(self, mask: u64) -> bool {
        self.0 & mask == mask
    }

    /// Bit 19: debugging allowed.
    pub const fn debug(self) -> bool {
        self.has(Self::DEBUG)
    }

    /// Bit 17, which must be 1.
    pub const fn reserved_bit_set(self) -> bool {
        self.has(Self::RESERVED_MUST_BE_ONE)
    }
}

/// `platform_info` (u64 at 0x040): how the platform was configured when the report
/// was made (docs/specs.md 4.2). Bit 6 and bits 63:8 are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    /// Bit 0: SMT is enabled on the platform (SMT_EN).
    pub const SMT_EN: u64 = 1 << 0;
    /// Bit 1: transparent SME is enabled (TSME_EN).
    pub const TSME_EN: u64 = 1 << 1;
    /// Bit 2: the platform uses error-correcting memory (ECC_EN).
    pub const ECC_EN: u64 = 1 << 2;
    /// Bit 3: the running average power limit is disabled (RAPL_DIS).
    pub const RAPL_DIS: u64 = 1 << 3;
    /// Bit 4: ciphertext hiding is enabled (CIPHERTEXT_HIDING_EN).
    pub const CIPHERTEXT_HIDING_EN: u64 = 1 << 4;
    /// Bit 5: the memory alias check completed (ALIAS_CHECK_COMPLETE).
    pub const ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
    /// Bit 7: SEV-TIO is enabled (TIO_EN).
    pub const TIO_EN: u64 = 1 << 7;

    /// Whether every bit of `mask` is set.
    pub const fn has(self, mask: u64) -> bool {
        self.0 & mask == mask
    }
}

/// Which key signed the report: `signer_info` bits 4:2 (docs/specs.md 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningKey {
    /// 0: the chip's VCEK.
    Vcek,
    /// 1: the cloud provider's VLEK.
    Vlek,
    /// 7: none (the report is not signed).
    None,
}

impl TryFrom<u8> for SigningKey {
    type Error = u8;

    /// Values 2 to 6 are reserved.
    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            0 => Ok(Self::Vcek),
            1 => Ok(Self::Vlek),
            7 => Ok(Self::None),
            other => Err(other),
        }
    }
}

/// `signer_info` (u32 at 0x048; docs/specs.md 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignerInfo(pub u32);

impl SignerInfo {
    /// Bit 0: the author key digest is valid (AUTHOR_KEY_EN).
    pub const fn author_key_en(self) -> bool {
        self.0 & 1 != 0
    }

    /// Bit 1: the chip ID is masked to zero (MASK_CHIP_KEY).
    pub const fn mask_chip_key(self) -> bool {
        self.0 & 2 != 0
    }

    /// Bits 4:2 as a [`SigningKey`]; `Err` holds a reserved value.
    pub fn signing_key(self) -> Result<SigningKey, u8> {
        SigningKey::try_from(((self.0 >> 2) & 0x7) as u8)
    }

    /// Bits 31:5, which must be zero.
    pub const fn reserved(self) -> u32 {
        self.0 >> 5
    }
}

/// The processor generations whose reports and keys this layout describes; each
/// signs with its own AMD root (ARK) and lays out TCB_VERSION its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnpProduct {
    /// EPYC 7003 (Zen 3).
    Milan,
    /// EPYC 9004 (Zen 4).
    Genoa,
    /// EPYC 9005 (Zen 5).
    Turin,
}

impl SnpProduct {
    /// Every product, oldest first.
    pub const ALL: [Self; 3] = [Self::Milan, Self::Genoa, Self::Turin];

    /// The product's name as AMD's key distribution service and certificates spell
    /// it (`ARK-Milan`, `SEV-Milan`, productName `Milan-B0`; docs/specs.md 4.5).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// Length of the chip ID (the VCEK's hwID): 64 bytes, or 8 on Turin (docs/specs.md 4.5).
    pub const fn chip_id_len(self) -> usize {
        match self {
            Self::Milan | Self::Genoa => 64,
            Self::Turin => 8,
        }
    }
}

impl fmt::Display for SnpProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded TCB_VERSION: the security patch level of each firmware component
/// (docs/specs.md 4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcbVersion {
    /// FMC (Turin only; `None` on Milan and Genoa).
    pub fmc: Option<u8>,
    /// Boot loader.
    pub bootloader: u8,
    /// PSP operating system (TEE).
    pub tee: u8,
    /// SNP firmware.
    pub snp: u8,
    /// CPU microcode.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decode a TCB_VERSION as `product` lays it out: Milan and Genoa put the boot
    /// loader in byte 0, TEE in 1, SNP in 6 and microcode in 7; Turin puts FMC in
    /// byte 0, boot loader in 1, TEE in 2, SNP in 3 and microcode in 7.
    pub const fn decode(raw: u64, product: SnpProduct) -> Self {
        let b = raw.to_le_bytes();
        match product {
            SnpProduct::Milan | SnpProduct::Genoa => Self {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            SnpProduct::Turin => Self {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// Encode as `product` lays it out (reserved bytes zero; `fmc` ignored on Milan
    /// and Genoa).
    pub const fn encode(self, product: SnpProduct) -> u64 {
        let mut b = [0u8; 8];
        match product {
            SnpProduct::Milan | SnpProduct::Genoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            SnpProduct::Turin => {
                b[0] = match self.fmc {
                    Some(v) => v,
                    None => 0,
                };
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        u64::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use zerocopy::FromZeros;

    fn report(version: u32) -> AttestationReport {
        let mut r = AttestationReport::new_zeroed();
        r.version = version;
        r
    }

    #[test]
    fn sizes_and_versions_are_checked() {
        let r = report(2);
        assert!(AttestationReport::from_bytes(r.as_bytes()).is_ok());
        assert_eq!(
            AttestationReport::from_bytes(&r.as_bytes()[..0x49F]).err(),
            Some(ReportError::Size(0x49F))
        );
        for v in [0, 1, 6, u32::MAX] {
            assert_eq!(
                AttestationReport::from_bytes(report(v).as_bytes()).err(),
                Some(ReportError::Version(v))
            );
        }
    }

    #[test]
    fn reserved_bytes_depend_on_the_version() {
        let mut r = report(2);
        assert_eq!(r.first_nonzero_reserved(), None);
        r.cpuid_fam_id = 0x19;
        assert_eq!(r.first_nonzero_reserved(), Some(0x188));
        r.version = 3;
        assert_eq!(r.first_nonzero_reserved(), None);
        r.current_mit_vector = 1;
        assert_eq!(r.first_nonzero_reserved(), Some(0x200));
        r.version = 5;
        assert_eq!(r.first_nonzero_reserved(), None);
        r.signer_info = 1 << 5;
        assert_eq!(r.first_nonzero_reserved(), Some(0x48));
        r.signer_info = 0b11111;
        assert_eq!(r.first_nonzero_reserved(), None);
        let mut bytes = r.as_bytes().to_vec();
        bytes[0x49F] = 1;
        let r = AttestationReport::from_bytes(&bytes).expect("valid size and version");
        assert_eq!(r.first_nonzero_reserved(), Some(0x49F));
    }

    #[test]
    fn signature_scalars_are_reversed_and_padding_checked() {
        let mut r = report(2);
        r.signature.r[0] = 0x11;
        r.signature.r[47] = 0x22;
        r.signature.s[1] = 0x33;
        let be = r.signature.r_big_endian().expect("padding zero");
        assert_eq!((be[0], be[47]), (0x22, 0x11));
        assert_eq!(r.signature.s_big_endian().map(|s| s[46]), Some(0x33));
        r.signature.s[48] = 1;
        assert_eq!(r.signature.s_big_endian(), None);
    }

    #[test]
    fn policy_and_signer_bits() {
        let p = GuestPolicy(0x30000);
        assert!(p.reserved_bit_set() && p.has(GuestPolicy::SMT) && !p.debug());
        assert!(GuestPolicy(0x80000 | 0x20000).debug());
        assert_eq!(
            (
                GuestPolicy(0x1F05).abi_major(),
                GuestPolicy(0x1F05).abi_minor()
            ),
            (0x1F, 5)
        );
        assert_eq!(SignerInfo(0).signing_key(), Ok(SigningKey::Vcek));
        assert_eq!(SignerInfo(1 << 2).signing_key(), Ok(SigningKey::Vlek));
        assert_eq!(SignerInfo(7 << 2).signing_key(), Ok(SigningKey::None));
        assert_eq!(SignerInfo(3 << 2).signing_key(), Err(3));
        assert!(SignerInfo(2).mask_chip_key() && SignerInfo(1).author_key_en());
    }

    #[test]
    fn tcb_layouts_per_product() {
        // docs/specs.md 4.4 example: 03 00 00 00 00 00 08 73.
        let raw = u64::from_le_bytes([0x03, 0, 0, 0, 0, 0, 0x08, 0x73]);
        let milan = TcbVersion::decode(raw, SnpProduct::Milan);
        assert_eq!(
            milan,
            TcbVersion {
                fmc: None,
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 0x73
            }
        );
        let raw = u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 9]);
        let turin = TcbVersion::decode(raw, SnpProduct::Turin);
        assert_eq!(
            turin,
            TcbVersion {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 9
            }
        );
        assert_eq!(turin.encode(SnpProduct::Turin), raw);
    }

    proptest! {
        #[test]
        fn tcb_round_trips(raw in any::<u64>()) {
            for product in SnpProduct::ALL {
                let tcb = TcbVersion::decode(raw, product);
                prop_assert_eq!(TcbVersion::decode(tcb.encode(product), product), tcb);
            }
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x500)) {
            if let Ok(r) = AttestationReport::from_bytes(&bytes) {
                let _ = r.first_nonzero_reserved();
                let _ = r.signature.r_big_endian();
                let _ = r.signer().signing_key();
            }
        }
    }
}
