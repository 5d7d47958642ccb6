//! Reference values: what a relying party expects of the evidence's fields beyond the
//! checks every verification runs, read from a policy file.
//!
//! A policy names, per platform, the expected value or the minimum of report fields:
//! for an SEV-SNP report (docs/specs.md 4.2-4.4) the measurement, VMPL, HOST_DATA, the ID
//! block's fields, the guest policy's bits and ABI, PLATFORM_INFO's bits and the
//! security patch levels of each TCB; for a TDX quote (docs/specs.md 6.4-6.6) MRTD,
//! MRCONFIGID, MROWNER, MROWNERCONFIG, the RTMRs, MRSEAM, XFAM, the TD attributes and
//! TEE_TCB_SVN. Every field is optional; what a policy leaves out is not compared.
//!
//! The file is TOML (docs/policy.md): an `[snp]` and a `[tdx]` table, at least one.
//! Byte strings are hex text of exactly the field's length, numbers TOML integers, bits
//! booleans (`true`: must be set, `false`: must be clear). A key the format does not
//! know is an error naming it, so a misspelt requirement never goes unchecked.
//!
//! ```toml
//! [snp]
//! measurement = "7a1e5c26...841f"      # 96 hex digits
//! vmpl = 0
//! host_data = "0000...0000"            # 64 hex digits
//!
//! [snp.guest_policy]
//! debug = false
//! smt = true
//!
//! [snp.current_tcb_minimum]
//! snp = 8
//! microcode = 115
//!
//! [tdx]
//! mrtd = "6363b804...5cbb"
//! rtmr0 = "0000...0000"
//! xfam = 0xe7
//!
//! [tdx.td_attributes]
//! debug = false
//! sept_ve_disable = true
//! ```
//!
//! Each key becomes one named check ([`check`]); [`crate::verify`] runs them after the
//! checks it always runs.

pub mod check;

use std::fmt::{self, Write as _};

use nacre_shared_abi::snp::report::{GuestPolicy, PlatformInfo};
use nacre_shared_abi::tdx::attributes;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;

/// Size of a SHA-384 digest: SNP MEASUREMENT and key digests, TDX MRTD, MRCONFIGID,
/// MROWNER, MROWNERCONFIG, the RTMRs and MRSEAM.
pub const SHA384_SIZE: usize = 48;

/// The highest VMPL: there are four, 0 to 3, each with its own VMPCK in the secrets
/// page (docs/specs.md 4.1, `msg_vmpck` 0 to 3; 4.6, VMPCK0 to VMPCK3).
pub const MAX_VMPL: u32 = 3;

/// Why a policy file cannot be used.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// Not UTF-8 text.
    #[error("the policy is not UTF-8 text (a TOML file is expected)")]
    NotText,
    /// Not TOML, an unknown key, a value of the wrong type, length or range.
    #[error("{}", .0.to_string().trim_end())]
    Toml(toml::de::Error),
    /// Neither platform's table.
    #[error(
        "the policy names no reference values: it needs an [snp] table, a [tdx] table, or both"
    )]
    Empty,
    /// A VMPL above 3.
    #[error("snp.vmpl is {0}, but VMPLs are 0 to 3")]
    Vmpl(u32),
}

/// A reference-value policy: the fields it names for each platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencePolicy {
    /// `[snp]`: what an SEV-SNP report must carry.
    pub snp: Option<SnpReference>,
    /// `[tdx]`: what a TDX quote must carry.
    pub tdx: Option<TdxReference>,
}

impl ReferencePolicy {
    /// Read a policy file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyError::NotText)?;
        Self::from_toml(text)
    }

    /// Read a policy from TOML text: unknown keys, values of the wrong type, hex of the
    /// wrong length, a VMPL above 3 and a policy naming no platform are errors.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text).map_err(PolicyError::Toml)?;
        if policy.snp.is_none() && policy.tdx.is_none() {
            return Err(PolicyError::Empty);
        }
        if let Some(vmpl) = policy.snp.as_ref().and_then(|s| s.vmpl) {
            if vmpl > MAX_VMPL {
                return Err(PolicyError::Vmpl(vmpl));
            }
        }
        Ok(policy)
    }

    /// The policy as TOML that [`Self::from_toml`] reads back as `self`, each table
    /// and key in the order docs/policy.md lists them, after `comment` (each line
    /// prefixed with `# `).
    pub fn to_toml(&self, comment: &str) -> String {
        let mut out = String::new();
        for line in comment.lines() {
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                // TOML takes no control character in a comment (a file name may hold
                // one): those are written escaped.
                out.push_str("# ");
                for c in line.chars() {
                    if c.is_control() {
                        out.extend(c.escape_default());
                    } else {
                        out.push(c);
                    }
                }
                out.push('\n');
            }
        }
        if let Some(snp) = &self.snp {
            snp.write(&mut out);
        }
        if let Some(tdx) = &self.tdx {
            tdx.write(&mut out);
        }
        out
    }
}

/// Reference values of an SEV-SNP ATTESTATION_REPORT (docs/specs.md 4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpReference {
    /// MEASUREMENT, the launch digest.
    pub measurement: Option<Bytes<SHA384_SIZE>>,
    /// VMPL: the privilege level that asked for the report. Without a policy (or
    /// without this key) 0 is required.
    pub vmpl: Option<u32>,
    /// The lowest GUEST_SVN (from the ID block) accepted.
    pub guest_svn_minimum: Option<u32>,
    /// HOST_DATA, given by the host at SNP_LAUNCH_FINISH.
    pub host_data: Option<Bytes<32>>,
    /// FAMILY_ID, from the ID block.
    pub family_id: Option<Bytes<16>>,
    /// IMAGE_ID, from the ID block.
    pub image_id: Option<Bytes<16>>,
    /// ID_KEY_DIGEST: SHA-384 of the key that signed the ID block.
    pub id_key_digest: Option<Bytes<SHA384_SIZE>>,
    /// AUTHOR_KEY_DIGEST: SHA-384 of the key that signed the ID key.
    pub author_key_digest: Option<Bytes<SHA384_SIZE>>,
    /// The lowest ABI version the guest policy may ask for (POLICY bits 15:0): a
    /// guest that accepts older firmware fails.
    pub policy_abi_minimum: Option<AbiVersion>,
    /// `[snp.guest_policy]`: POLICY bits that must be set or clear.
    pub guest_policy: Option<GuestPolicyBits>,
    /// `[snp.platform_info]`: PLATFORM_INFO bits that must be set or clear.
    pub platform_info: Option<PlatformInfoBits>,
    /// `[snp.current_tcb_minimum]`: the lowest CURRENT_TCB, per component.
    pub current_tcb_minimum: Option<TcbMinimum>,
    /// `[snp.committed_tcb_minimum]`: the lowest COMMITTED_TCB, per component.
    pub committed_tcb_minimum: Option<TcbMinimum>,
    /// `[snp.launch_tcb_minimum]`: the lowest LAUNCH_TCB, per component.
    pub launch_tcb_minimum: Option<TcbMinimum>,
    /// `[snp.reported_tcb_minimum]`: the lowest REPORTED_TCB (the VCEK's), per
    /// component.
    pub reported_tcb_minimum: Option<TcbMinimum>,
}

impl SnpReference {
    fn write(&self, out: &mut String) {
        out.push_str("\n[snp]\n");
        write_bytes(out, "measurement", self.measurement.as_ref());
        write_number(out, "vmpl", self.vmpl);
        write_number(out, "guest_svn_minimum", self.guest_svn_minimum);
        write_bytes(out, "host_data", self.host_data.as_ref());
        write_bytes(out, "family_id", self.family_id.as_ref());
        write_bytes(out, "image_id", self.image_id.as_ref());
        write_bytes(out, "id_key_digest", self.id_key_digest.as_ref());
        write_bytes(out, "author_key_digest", self.author_key_digest.as_ref());
        if let Some(abi) = self.policy_abi_minimum {
            let _ = writeln!(out, "policy_abi_minimum = \"{abi}\"");
        }
        write_bits(out, "snp.guest_policy", self.guest_policy.map(|b| b.bits()));
        write_bits(
            out,
            "snp.platform_info",
            self.platform_info.map(|b| b.bits()),
        );
        for (table, tcb) in [
            ("snp.current_tcb_minimum", &self.current_tcb_minimum),
            ("snp.committed_tcb_minimum", &self.committed_tcb_minimum),
            ("snp.launch_tcb_minimum", &self.launch_tcb_minimum),
            ("snp.reported_tcb_minimum", &self.reported_tcb_minimum),
        ] {
            if let Some(tcb) = tcb {
                let _ = write!(out, "\n[{table}]\n");
                for (key, value) in tcb.components() {
                    write_number(out, key, value);
                }
            }
        }
    }
}

/// Reference values of a TDX quote's TD quote body (docs/specs.md 6.6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxReference {
    /// MRTD, the TD's build-time measurement.
    pub mrtd: Option<Bytes<SHA384_SIZE>>,
    /// MRCONFIGID, given by the host when it creates the TD.
    pub mr_config_id: Option<Bytes<SHA384_SIZE>>,
    /// MROWNER, given by the host when it creates the TD.
    pub mr_owner: Option<Bytes<SHA384_SIZE>>,
    /// MROWNERCONFIG, given by the host when it creates the TD.
    pub mr_owner_config: Option<Bytes<SHA384_SIZE>>,
    /// RTMR0, extended by the guest at run time.
    pub rtmr0: Option<Bytes<SHA384_SIZE>>,
    /// RTMR1.
    pub rtmr1: Option<Bytes<SHA384_SIZE>>,
    /// RTMR2.
    pub rtmr2: Option<Bytes<SHA384_SIZE>>,
    /// RTMR3.
    pub rtmr3: Option<Bytes<SHA384_SIZE>>,
    /// MRSEAM: the measurement of the TDX module.
    pub mr_seam: Option<Bytes<SHA384_SIZE>>,
    /// MRSIGNERSEAM: the TDX module's signer (zero for Intel's).
    pub mr_signer_seam: Option<Bytes<SHA384_SIZE>>,
    /// XFAM: the extended state components the TD may use, exactly.
    pub xfam: Option<u64>,
    /// The lowest TEE_TCB_SVN, compared byte by byte (each of the 16 at least the
    /// policy's).
    pub tee_tcb_svn_minimum: Option<Bytes<16>>,
    /// `[tdx.td_attributes]`: TD attribute bits that must be set or clear.
    pub td_attributes: Option<TdAttributeBits>,
}

impl TdxReference {
    /// The RTMRs the policy names, by index.
    pub fn rtmrs(&self) -> [Option<&Bytes<SHA384_SIZE>>; 4] {
        [
            self.rtmr0.as_ref(),
            self.rtmr1.as_ref(),
            self.rtmr2.as_ref(),
            self.rtmr3.as_ref(),
        ]
    }

    fn write(&self, out: &mut String) {
        out.push_str("\n[tdx]\n");
        write_bytes(out, "mrtd", self.mrtd.as_ref());
        write_bytes(out, "mr_config_id", self.mr_config_id.as_ref());
        write_bytes(out, "mr_owner", self.mr_owner.as_ref());
        write_bytes(out, "mr_owner_config", self.mr_owner_config.as_ref());
        for (i, rtmr) in self.rtmrs().into_iter().enumerate() {
            write_bytes(out, &format!("rtmr{i}"), rtmr);
        }
        write_bytes(out, "mr_seam", self.mr_seam.as_ref());
        write_bytes(out, "mr_signer_seam", self.mr_signer_seam.as_ref());
        if let Some(xfam) = self.xfam {
            let _ = writeln!(out, "xfam = {xfam:#x}");
        }
        write_bytes(
            out,
            "tee_tcb_svn_minimum",
            self.tee_tcb_svn_minimum.as_ref(),
        );
        write_bits(
            out,
            "tdx.td_attributes",
            self.td_attributes.map(|b| b.bits()),
        );
    }
}

/// The lowest security patch level of each component of a TCB_VERSION (docs/specs.md
/// 4.4). `fmc` exists only in Turin's layout: a policy that names it fails on others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbMinimum {
    /// Boot loader.
    pub bootloader: Option<u8>,
    /// PSP operating system (TEE).
    pub tee: Option<u8>,
    /// SNP firmware.
    pub snp: Option<u8>,
    /// CPU microcode.
    pub microcode: Option<u8>,
    /// FMC (Turin).
    pub fmc: Option<u8>,
}

impl TcbMinimum {
    /// Each component's key and minimum, in TOML order.
    pub fn components(&self) -> [(&'static str, Option<u8>); 5] {
        [
            ("bootloader", self.bootloader),
            ("tee", self.tee),
            ("snp", self.snp),
            ("microcode", self.microcode),
            ("fmc", self.fmc),
        ]
    }
}

/// An SEV-SNP ABI version, `"MAJOR.MINOR"` in a policy (each 0 to 255).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    /// Major version (POLICY bits 15:8).
    pub major: u8,
    /// Minor version (POLICY bits 7:0).
    pub minor: u8,
}

impl AbiVersion {
    /// The ABI version a guest policy asks for at least.
    pub fn of_policy(policy: GuestPolicy) -> Self {
        Self {
            major: policy.abi_major(),
            minor: policy.abi_minor(),
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for AbiVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an ABI version MAJOR.MINOR such as \"1.51\"");
        let (major, minor) = text.split_once('.').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u8>()
                .map_err(|_| format!("{text:?}: each part of an ABI version is 0 to 255"))
        };
        Ok(Self {
            major: part(major)?,
            minor: part(minor)?,
        })
    }
}

impl<'de> Deserialize<'de> for AbiVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AbiVisitor;
        impl Visitor<'_> for AbiVisitor {
            type Value = AbiVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ABI version as a string \"MAJOR.MINOR\", such as \"1.51\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AbiVersion, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(AbiVisitor)
    }
}

/// A byte string of exactly `N` bytes, written in a policy as `2 * N` hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> fmt::Display for Bytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> std::str::FromStr for Bytes<N> {
    type Err = String;

    /// Exactly `2 * N` hex digits, either case, nothing else.
    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.len();
        if digits != 2 * N {
            return Err(format!(
                "expected {} hex digits ({N} bytes), found {digits} characters",
                2 * N
            ));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).map_err(|e| format!("{text:?} is not hex: {e}"))?;
        Ok(Self(out))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for HexVisitor<N> {
            type Value = Bytes<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of {} hex digits ({N} bytes)", 2 * N)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Bytes<N>, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(HexVisitor::<N>)
    }
}

/// One named bit of a bit table: its key in the policy, its name in the
/// specification, its mask, and what the policy requires of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bit {
    /// The key in the policy (`debug`).
    pub key: &'static str,
    /// The specification's name (`DEBUG`).
    pub name: &'static str,
    /// The bit in the field.
    pub mask: u64,
    /// `Some(true)`: must be set; `Some(false)`: must be clear; `None`: not compared.
    pub required: Option<bool>,
}

/// A table of named bits of one field: a struct of optional booleans, one per bit, its
/// list of [`Bit`]s, and the table that requires exactly the bits of a value.
macro_rules! bit_table {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$field_meta:meta])* $key:ident => $spec:literal, $mask:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$field_meta])* pub $key: Option<bool>, )*
        }

        impl $name {
            /// Every bit of the table, in order, with what the policy requires of it.
            pub fn bits(&self) -> Vec<Bit> {
                vec![$( Bit {
                    key: stringify!($key),
                    name: $spec,
                    mask: $mask,
                    required: self.$key,
                }, )*]
            }

            /// The table that requires every bit to be as it is in `value`.
            pub fn exactly(value: u64) -> Self {
                Self { $( $key: Some(value & $mask != 0), )* }
            }
        }
    };
}

bit_table! {
    /// `[snp.guest_policy]`: bits of the guest policy (docs/specs.md 4.3). The
    /// reserved bit 17 is always checked (`policy-reserved-bit`).
    GuestPolicyBits {
        /// Bit 16: SMT allowed.
        smt => "SMT", GuestPolicy::SMT;
        /// Bit 18: association with a migration agent allowed.
        migrate_ma => "MIGRATE_MA", GuestPolicy::MIGRATE_MA;
        /// Bit 19: the host may debug the guest.
        debug => "DEBUG", GuestPolicy::DEBUG;
        /// Bit 20: single socket only.
        single_socket => "SINGLE_SOCKET", GuestPolicy::SINGLE_SOCKET;
        /// Bit 21: CXL memory allowed.
        cxl_allow => "CXL_ALLOW", GuestPolicy::CXL_ALLOW;
        /// Bit 22: AES-256-XTS memory encryption required.
        mem_aes_256_xts => "MEM_AES_256_XTS", GuestPolicy::MEM_AES_256_XTS;
        /// Bit 23: RAPL must be disabled.
        rapl_dis => "RAPL_DIS", GuestPolicy::RAPL_DIS;
        /// Bit 24: ciphertext hiding for DRAM required.
        ciphertext_hiding_dram => "CIPHERTEXT_HIDING_DRAM", GuestPolicy::CIPHERTEXT_HIDING_DRAM;
        /// Bit 25: page swapping disabled.
        page_swap_disable => "PAGE_SWAP_DISABLE", GuestPolicy::PAGE_SWAP_DISABLE;
    }
}

bit_table! {
    /// `[snp.platform_info]`: bits of PLATFORM_INFO (docs/specs.md 4.2).
    PlatformInfoBits {
        /// Bit 0: SMT enabled.
        smt_en => "SMT_EN", PlatformInfo::SMT_EN;
        /// Bit 1: transparent SME enabled.
        tsme_en => "TSME_EN", PlatformInfo::TSME_EN;
        /// Bit 2: ECC memory.
        ecc_en => "ECC_EN", PlatformInfo::ECC_EN;
        /// Bit 3: RAPL disabled.
        rapl_dis => "RAPL_DIS", PlatformInfo::RAPL_DIS;
        /// Bit 4: ciphertext hiding enabled.
        ciphertext_hiding_en => "CIPHERTEXT_HIDING_EN", PlatformInfo::CIPHERTEXT_HIDING_EN;
        /// Bit 5: the memory alias check completed.
        alias_check_complete => "ALIAS_CHECK_COMPLETE", PlatformInfo::ALIAS_CHECK_COMPLETE;
        /// Bit 7: SEV-TIO enabled.
        tio_en => "TIO_EN", PlatformInfo::TIO_EN;
    }
}

bit_table! {
    /// `[tdx.td_attributes]`: TD attribute bits (docs/specs.md 6.4).
    TdAttributeBits {
        /// Bit 0: the host may debug the TD.
        debug => "DEBUG", attributes::DEBUG;
        /// Bit 4: HGS+ profiling.
        hgs_plus_prof => "HGS_PLUS_PROF", attributes::HGS_PLUS_PROF;
        /// Bit 5: performance profiling.
        perf_prof => "PERF_PROF", attributes::PERF_PROF;
        /// Bit 6: PMT profiling.
        pmt_prof => "PMT_PROF", attributes::PMT_PROF;
        /// Bit 16: ICSSD.
        icssd => "ICSSD", attributes::ICSSD;
        /// Bit 27: LASS.
        lass => "LASS", attributes::LASS;
        /// Bit 28: EPT violations on pending pages do not become #VE.
        sept_ve_disable => "SEPT_VE_DISABLE", attributes::SEPT_VE_DISABLE;
        /// Bit 29: the TD may be migrated.
        migratable => "MIGRATABLE", attributes::MIGRATABLE;
        /// Bit 30: supervisor protection keys.
        pks => "PKS", attributes::PKS;
        /// Bit 31: Key Locker.
        kl => "KL", attributes::KL;
        /// Bit 62: TPA.
        tpa => "TPA", attributes::TPA;
        /// Bit 63: performance monitoring.
        perfmon => "PERFMON", attributes::PERFMON;
    }
}

fn write_bytes<const N: usize>(out: &mut String, key: &str, value: Option<&Bytes<N>>) {
    if let Some(value) = value {
        let _ = writeln!(out, "{key} = \"{value}\"");
    }
}

fn write_number<T: fmt::Display>(out: &mut String, key: &str, value: Option<T>) {
    if let Some(value) = value {
        let _ = writeln!(out, "{key} = {value}");
    }
}

fn write_bits(out: &mut String, table: &str, bits: Option<Vec<Bit>>) {
    let Some(bits) = bits else { return };
    let _ = write!(out, "\n[{table}]\n");
    for bit in bits {
        write_number(out, bit.key, bit.required);
    }
}

#[cfg(test)]
mod tests;
