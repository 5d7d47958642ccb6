//! A [`ReferencePolicy`] applied to evidence: one named check per key the policy
//! gives, named after the key (`host_data` is `host-data`), each saying on failure
//! which field differs, what the policy requires and what the evidence has.
//!
//! The measurement (`snp.measurement`, `tdx.mrtd`) is the `measurement` or `mrtd`
//! check every verification with an expected measurement runs ([`crate::Expectations`]);
//! `snp.vmpl` is the `vmpl` check every SEV-SNP verification runs, 0 without a policy.

use nacre_shared_abi::snp::report::{AttestationReport, GuestPolicy, SnpProduct, TcbVersion};

use super::{AbiVersion, Bit, Bytes, ReferencePolicy, SnpReference, TcbMinimum, SHA384_SIZE};
use crate::tdx::Quote;
use crate::Check;

/// The policy has a table for the evidence's platform (`[snp]` for an SEV-SNP
/// report, `[tdx]` for a TDX quote); a policy for the other platform only fails.
pub const POLICY_SECTION: &str = "policy-section";
/// SNP: VMPL is `snp.vmpl`, or 0 without it (run on every report).
pub const VMPL: &str = "vmpl";
/// SNP: GUEST_SVN is at least `snp.guest_svn_minimum`.
pub const GUEST_SVN_MINIMUM: &str = "guest-svn-minimum";
/// SNP: HOST_DATA is `snp.host_data`.
pub const HOST_DATA: &str = "host-data";
/// SNP: FAMILY_ID is `snp.family_id`.
pub const FAMILY_ID: &str = "family-id";
/// SNP: IMAGE_ID is `snp.image_id`.
pub const IMAGE_ID: &str = "image-id";
/// SNP: ID_KEY_DIGEST is `snp.id_key_digest`.
pub const ID_KEY_DIGEST: &str = "id-key-digest";
/// SNP: AUTHOR_KEY_DIGEST is `snp.author_key_digest`.
pub const AUTHOR_KEY_DIGEST: &str = "author-key-digest";
/// SNP: the guest policy's lowest ABI is at least `snp.policy_abi_minimum`.
pub const POLICY_ABI_MINIMUM: &str = "policy-abi-minimum";
/// SNP: the POLICY bits of `[snp.guest_policy]` are set or clear as it says.
pub const GUEST_POLICY: &str = "guest-policy";
/// SNP: the PLATFORM_INFO bits of `[snp.platform_info]` are set or clear as it says.
pub const PLATFORM_INFO: &str = "platform-info";
/// SNP: each component of CURRENT_TCB is at least `[snp.current_tcb_minimum]`'s.
pub const CURRENT_TCB_MINIMUM: &str = "current-tcb-minimum";
/// SNP: each component of COMMITTED_TCB is at least `[snp.committed_tcb_minimum]`'s.
pub const COMMITTED_TCB_MINIMUM: &str = "committed-tcb-minimum";
/// SNP: each component of LAUNCH_TCB is at least `[snp.launch_tcb_minimum]`'s.
pub const LAUNCH_TCB_MINIMUM: &str = "launch-tcb-minimum";
/// SNP: each component of REPORTED_TCB is at least `[snp.reported_tcb_minimum]`'s.
pub const REPORTED_TCB_MINIMUM: &str = "reported-tcb-minimum";
/// TDX: MRCONFIGID is `tdx.mr_config_id`.
pub const MR_CONFIG_ID: &str = "mr-config-id";
/// TDX: MROWNER is `tdx.mr_owner`.
pub const MR_OWNER: &str = "mr-owner";
/// TDX: MROWNERCONFIG is `tdx.mr_owner_config`.
pub const MR_OWNER_CONFIG: &str = "mr-owner-config";
/// TDX: RTMR0 to RTMR3 are `tdx.rtmr0` to `tdx.rtmr3`.
pub const RTMR: [&str; 4] = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];
/// TDX: MRSEAM is `tdx.mr_seam`.
pub const MR_SEAM: &str = "mr-seam";
/// TDX: MRSIGNERSEAM is `tdx.mr_signer_seam`.
pub const MR_SIGNER_SEAM: &str = "mr-signer-seam";
/// TDX: XFAM is `tdx.xfam`.
pub const XFAM: &str = "xfam";
/// TDX: every byte of TEE_TCB_SVN is at least `tdx.tee_tcb_svn_minimum`'s.
pub const TEE_TCB_SVN_MINIMUM: &str = "tee-tcb-svn-minimum";
/// TDX: the TD attribute bits of `[tdx.td_attributes]` are set or clear as it says
/// (`td-attributes` is the check of the bits an image declares, with `--image`).
pub const TD_ATTRIBUTE_BITS: &str = "td-attribute-bits";

/// The `vmpl` check of an SEV-SNP report: the VMPL that asked for it must be the
/// policy's `snp.vmpl`, and 0 when no policy names one. A report asked for from a
/// less privileged VMPL speaks for code that the VMPL 0 software can control, so
/// it does not vouch for the launch the way a VMPL 0 report does.
pub fn snp_vmpl(report: &AttestationReport, reference: Option<&SnpReference>) -> Check {
    let (expected, why) = match reference.and_then(|r| r.vmpl) {
        Some(vmpl) => (vmpl, "as the policy requires"),
        None => (0, "the default; a policy's snp.vmpl can require another"),
    };
    if report.vmpl == expected {
        Check::pass(VMPL, format!("VMPL {} ({why})", report.vmpl))
    } else {
        Check::fail(
            VMPL,
            format!(
                "vmpl: expected {expected} ({why}), the report was asked for from VMPL {}",
                report.vmpl
            ),
        )
    }
}

/// The checks `policy` adds for an SEV-SNP report of `product` (whose TCB layout
/// decodes the TCB fields), `vmpl` and the measurement aside: none without a
/// policy.
pub fn snp(
    policy: Option<&ReferencePolicy>,
    r: &AttestationReport,
    product: SnpProduct,
) -> Vec<Check> {
    let Some(policy) = policy else {
        return Vec::new();
    };
    let Some(s) = &policy.snp else {
        return vec![missing_section("snp", "an SEV-SNP report")];
    };
    let what = "the report";
    let mut checks = vec![Check::pass(
        POLICY_SECTION,
        "the policy's [snp] table applies to this SEV-SNP report",
    )];
    if let Some(min) = s.guest_svn_minimum {
        checks.push(minimum(
            GUEST_SVN_MINIMUM,
            "guest_svn",
            min,
            r.guest_svn,
            what,
        ));
    }
    let fields: [ByteField<'_>; 5] = [
        (
            HOST_DATA,
            "host_data",
            s.host_data.as_ref().map(|b| &b.0[..]),
            &r.host_data,
        ),
        (
            FAMILY_ID,
            "family_id",
            s.family_id.as_ref().map(|b| &b.0[..]),
            &r.family_id,
        ),
        (
            IMAGE_ID,
            "image_id",
            s.image_id.as_ref().map(|b| &b.0[..]),
            &r.image_id,
        ),
        (
            ID_KEY_DIGEST,
            "id_key_digest",
            s.id_key_digest.as_ref().map(|b| &b.0[..]),
            &r.id_key_digest,
        ),
        (
            AUTHOR_KEY_DIGEST,
            "author_key_digest",
            s.author_key_digest.as_ref().map(|b| &b.0[..]),
            &r.author_key_digest,
        ),
    ];
    for (name, field, expected, actual) in fields {
        if let Some(expected) = expected {
            checks.push(equal(name, field, expected, actual, what));
        }
    }
    let policy_value = GuestPolicy(r.policy);
    if let Some(min) = s.policy_abi_minimum {
        checks.push(abi_minimum(min, AbiVersion::of_policy(policy_value)));
    }
    if let Some(bits) = s.guest_policy {
        checks.push(bits_check(
            GUEST_POLICY,
            "policy",
            r.policy,
            &bits.bits(),
            what,
        ));
    }
    if let Some(bits) = s.platform_info {
        checks.push(bits_check(
            PLATFORM_INFO,
            "platform_info",
            r.platform_info,
            &bits.bits(),
            what,
        ));
    }
    for (name, field, min, raw) in [
        (
            CURRENT_TCB_MINIMUM,
            "current_tcb",
            s.current_tcb_minimum,
            r.current_tcb,
        ),
        (
            COMMITTED_TCB_MINIMUM,
            "committed_tcb",
            s.committed_tcb_minimum,
            r.committed_tcb,
        ),
        (
            LAUNCH_TCB_MINIMUM,
            "launch_tcb",
            s.launch_tcb_minimum,
            r.launch_tcb,
        ),
        (
            REPORTED_TCB_MINIMUM,
            "reported_tcb",
            s.reported_tcb_minimum,
            r.reported_tcb,
        ),
    ] {
        if let Some(min) = min {
            checks.push(tcb_minimum(name, field, raw, product, &min));
        }
    }
    checks
}

/// The checks `policy` adds for a TDX quote, the MRTD aside: none without a policy.
pub fn tdx(policy: Option<&ReferencePolicy>, q: &Quote) -> Vec<Check> {
    let Some(policy) = policy else {
        return Vec::new();
    };
    let Some(t) = &policy.tdx else {
        return vec![missing_section("tdx", "a TDX quote")];
    };
    let what = "the quote";
    let b = &q.body;
    let mut checks = vec![Check::pass(
        POLICY_SECTION,
        "the policy's [tdx] table applies to this TDX quote",
    )];
    let mut fields: Vec<ByteField<'_>> = vec![
        (
            MR_CONFIG_ID,
            "mr_config_id",
            digest(t.mr_config_id.as_ref()),
            &b.mr_config_id,
        ),
        (
            MR_OWNER,
            "mr_owner",
            digest(t.mr_owner.as_ref()),
            &b.mr_owner,
        ),
        (
            MR_OWNER_CONFIG,
            "mr_owner_config",
            digest(t.mr_owner_config.as_ref()),
            &b.mr_owner_config,
        ),
    ];
    for (i, expected) in t.rtmrs().into_iter().enumerate() {
        fields.push((RTMR[i], RTMR[i], digest(expected), &b.rtmr[i]));
    }
    fields.push((MR_SEAM, "mr_seam", digest(t.mr_seam.as_ref()), &b.mr_seam));
    fields.push((
        MR_SIGNER_SEAM,
        "mr_signer_seam",
        digest(t.mr_signer_seam.as_ref()),
        &b.mr_signer_seam,
    ));
    for (name, field, expected, actual) in fields {
        if let Some(expected) = expected {
            checks.push(equal(name, field, expected, actual, what));
        }
    }
    if let Some(expected) = t.xfam {
        let actual = u64::from_le_bytes(b.xfam);
        checks.push(if actual == expected {
            Check::pass(XFAM, format!("xfam {actual:#x}, as the policy requires"))
        } else {
            Check::fail(
                XFAM,
                format!("xfam: the policy requires {expected:#x}, {what} has {actual:#x}"),
            )
        });
    }
    if let Some(min) = &t.tee_tcb_svn_minimum {
        checks.push(tee_tcb_svn_minimum(&min.0, &b.tee_tcb_svn));
    }
    if let Some(bits) = t.td_attributes {
        checks.push(bits_check(
            TD_ATTRIBUTE_BITS,
            "td_attributes",
            q.td_attributes(),
            &bits.bits(),
            what,
        ));
    }
    checks
}

/// A byte-string field: its check, its name in the evidence, what the policy requires
/// (if anything) and what the evidence has.
type ByteField<'a> = (&'static str, &'static str, Option<&'a [u8]>, &'a [u8]);

fn digest(value: Option<&Bytes<SHA384_SIZE>>) -> Option<&[u8]> {
    value.map(|b| &b.0[..])
}

fn missing_section(table: &str, evidence: &str) -> Check {
    Check::fail(
        POLICY_SECTION,
        format!(
            "the policy has no [{table}] table: it names no reference values for {evidence}, \
             so it cannot be met"
        ),
    )
}

fn equal(name: &'static str, field: &str, expected: &[u8], actual: &[u8], what: &str) -> Check {
    if expected == actual {
        Check::pass(
            name,
            format!("{field} {}, as the policy requires", hex::encode(actual)),
        )
    } else {
        Check::fail(
            name,
            format!(
                "{field}: the policy requires {}, {what} has {}",
                hex::encode(expected),
                hex::encode(actual)
            ),
        )
    }
}

fn minimum(name: &'static str, field: &str, min: u32, actual: u32, what: &str) -> Check {
    if actual >= min {
        Check::pass(
            name,
            format!("{field} {actual}, at least {min} as the policy requires"),
        )
    } else {
        Check::fail(
            name,
            format!("{field}: the policy requires at least {min}, {what} has {actual}"),
        )
    }
}

fn abi_minimum(min: AbiVersion, actual: AbiVersion) -> Check {
    if actual >= min {
        Check::pass(
            POLICY_ABI_MINIMUM,
            format!(
                "the guest policy asks for firmware ABI {actual} or later, at least {min} as the \
                 policy requires"
            ),
        )
    } else {
        Check::fail(
            POLICY_ABI_MINIMUM,
            format!(
                "policy ABI (bits 15:0): the policy requires a guest that asks for firmware ABI \
                 {min} or later, the report's guest policy accepts {actual} or later"
            ),
        )
    }
}

/// The bits `bits` requires of `value`, field `field`.
fn bits_check(name: &'static str, field: &str, value: u64, bits: &[Bit], what: &str) -> Check {
    let state = |set: bool| if set { "set" } else { "clear" };
    let mut right = Vec::new();
    let mut wrong = Vec::new();
    for bit in bits {
        let Some(required) = bit.required else {
            continue;
        };
        let set = value & bit.mask != 0;
        if set == required {
            right.push(format!("{} {}", bit.name, state(set)));
        } else {
            wrong.push(format!(
                "the policy requires {} {}, {what} has it {}",
                bit.name,
                state(required),
                state(set)
            ));
        }
    }
    if !wrong.is_empty() {
        Check::fail(name, format!("{field} {value:#x}: {}", wrong.join("; ")))
    } else if right.is_empty() {
        Check::pass(
            name,
            format!("{field} {value:#x}: the policy's table names no bit"),
        )
    } else {
        Check::pass(
            name,
            format!(
                "{field} {value:#x}: {}, as the policy requires",
                right.join(", ")
            ),
        )
    }
}

/// Each component of the TCB_VERSION `raw`, decoded for `product`, against `min`.
fn tcb_minimum(
    name: &'static str,
    field: &str,
    raw: u64,
    product: SnpProduct,
    min: &TcbMinimum,
) -> Check {
    let t = TcbVersion::decode(raw, product);
    let components = [
        ("boot loader", min.bootloader, Some(t.bootloader)),
        ("TEE", min.tee, Some(t.tee)),
        ("SNP", min.snp, Some(t.snp)),
        ("microcode", min.microcode, Some(t.microcode)),
        ("FMC", min.fmc, t.fmc),
    ];
    let mut right = Vec::new();
    let mut wrong = Vec::new();
    for (label, min, actual) in components {
        let Some(min) = min else { continue };
        match actual {
            None => wrong.push(format!(
                "the policy requires {label} at least {min}, but {product}'s TCB_VERSION has no \
                 {label}"
            )),
            Some(v) if v < min => wrong.push(format!(
                "the policy requires {label} at least {min}, the report has {v}"
            )),
            Some(v) => right.push(format!("{label} {v} >= {min}")),
        }
    }
    let raw_hex = hex::encode(raw.to_le_bytes());
    if !wrong.is_empty() {
        Check::fail(
            name,
            format!("{field} {raw_hex} ({product} layout): {}", wrong.join("; ")),
        )
    } else if right.is_empty() {
        Check::pass(
            name,
            format!("{field} {raw_hex}: the policy's table names no component"),
        )
    } else {
        Check::pass(
            name,
            format!(
                "{field} {raw_hex} ({product} layout): {}, as the policy requires",
                right.join(", ")
            ),
        )
    }
}

fn tee_tcb_svn_minimum(min: &[u8; 16], actual: &[u8; 16]) -> Check {
    let low: Vec<String> = min
        .iter()
        .zip(actual)
        .enumerate()
        .filter(|(_, (min, actual))| actual < min)
        .map(|(i, (min, actual))| {
            format!("byte {i} is {actual}, the policy requires at least {min}")
        })
        .collect();
    if low.is_empty() {
        Check::pass(
            TEE_TCB_SVN_MINIMUM,
            format!(
                "tee_tcb_svn {}: every byte at least the policy's {}",
                hex::encode(actual),
                hex::encode(min)
            ),
        )
    } else {
        Check::fail(
            TEE_TCB_SVN_MINIMUM,
            format!(
                "tee_tcb_svn {} against the policy's minimum {}: {}",
                hex::encode(actual),
                hex::encode(min),
                low.join("; ")
            ),
        )
    }
}
