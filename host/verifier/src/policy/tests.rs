//! The policy format (parsing, its errors, writing it back) and its checks, applied to
//! the real evidence in `tests/vectors`: the Milan report and the TDX quote v4.

use super::check as name;
use super::*;
use crate::test_vectors::read;
use crate::{decode_hex, Check, EvidenceKind, Expectations};
use nacre_shared_abi::snp::report::{AttestationReport, SnpProduct};
use proptest::prelude::*;

const MILAN_MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

fn milan() -> AttestationReport {
    let bytes = decode_hex(&read("virtee-sev", "report_milan.hex")).expect("hex");
    AttestationReport::from_bytes(&bytes).expect("the Milan report")
}

fn quote() -> crate::tdx::Quote {
    crate::tdx::Quote::parse(&read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat")).expect("quote")
}

fn parse(text: &str) -> ReferencePolicy {
    ReferencePolicy::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn error(text: &str) -> String {
    match ReferencePolicy::from_toml(text) {
        Ok(p) => panic!("accepted: {p:?}\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn zeros(bytes: usize) -> String {
    "00".repeat(bytes)
}

/// The check named `name` of `checks`, which must be there once.
fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    let found: Vec<&Check> = checks.iter().filter(|c| c.name == name).collect();
    assert_eq!(found.len(), 1, "{name} in {checks:#?}");
    found[0]
}

fn passed(checks: &[Check], name: &str) {
    let c = find(checks, name);
    assert!(c.passed, "{name} failed: {}", c.detail);
}

/// Check `name` failed and its detail holds every one of `needles`.
fn failed(checks: &[Check], name: &str, needles: &[&str]) {
    let c = find(checks, name);
    assert!(!c.passed, "{name} passed: {}", c.detail);
    for needle in needles {
        assert!(
            c.detail.contains(needle),
            "{name}: {needle:?} not in {}",
            c.detail
        );
    }
}

/// Every key of the format, with the Milan report's values where it has them.
fn full_snp_text() -> String {
    format!(
        r#"
[snp]
measurement = "{MILAN_MEASUREMENT}"
vmpl = 0
guest_svn_minimum = 0
host_data = "{h32}"
family_id = "{h16}"
image_id = "{h16}"
id_key_digest = "{h48}"
author_key_digest = "{h48}"
policy_abi_minimum = "0.0"

[snp.guest_policy]
smt = true
migrate_ma = false
debug = false
single_socket = false
cxl_allow = false
mem_aes_256_xts = false
rapl_dis = false
ciphertext_hiding_dram = false
page_swap_disable = false

[snp.platform_info]
smt_en = true
tsme_en = false
ecc_en = false
rapl_dis = false
ciphertext_hiding_en = false
alias_check_complete = false
tio_en = false

[snp.current_tcb_minimum]
bootloader = 3
tee = 0
snp = 8
microcode = 115

[snp.committed_tcb_minimum]
snp = 8

[snp.launch_tcb_minimum]
microcode = 0x73

[snp.reported_tcb_minimum]
bootloader = 1
"#,
        h16 = zeros(16),
        h32 = zeros(32),
        h48 = zeros(48),
    )
}

/// Every `[tdx]` key, with the real quote's values.
fn full_tdx_text(q: &crate::tdx::Quote) -> String {
    let b = &q.body;
    format!(
        r#"
[tdx]
mrtd = "{}"
mr_config_id = "{}"
mr_owner = "{}"
mr_owner_config = "{}"
rtmr0 = "{}"
rtmr1 = "{}"
rtmr2 = "{}"
rtmr3 = "{}"
mr_seam = "{}"
mr_signer_seam = "{}"
xfam = {:#x}
tee_tcb_svn_minimum = "{}"

[tdx.td_attributes]
debug = false
sept_ve_disable = {}
migratable = false
"#,
        hex::encode(b.mr_td),
        hex::encode(b.mr_config_id),
        hex::encode(b.mr_owner),
        hex::encode(b.mr_owner_config),
        hex::encode(b.rtmr[0]),
        hex::encode(b.rtmr[1]),
        hex::encode(b.rtmr[2]),
        hex::encode(b.rtmr[3]),
        hex::encode(b.mr_seam),
        hex::encode(b.mr_signer_seam),
        u64::from_le_bytes(b.xfam),
        hex::encode(b.tee_tcb_svn),
        q.td_attributes() & attributes::SEPT_VE_DISABLE != 0,
    )
}

#[test]
fn every_key_parses_and_writes_back_the_same() {
    let q = quote();
    let text = full_snp_text() + &full_tdx_text(&q);
    let policy = parse(&text);
    let snp = policy.snp.as_ref().expect("[snp]");
    assert_eq!(snp.vmpl, Some(0));
    assert_eq!(
        snp.measurement.map(|m| hex::encode(m.0)).as_deref(),
        Some(MILAN_MEASUREMENT)
    );
    assert_eq!(
        snp.policy_abi_minimum,
        Some(AbiVersion { major: 0, minor: 0 })
    );
    assert_eq!(snp.guest_policy.and_then(|g| g.smt), Some(true));
    assert_eq!(snp.launch_tcb_minimum.and_then(|t| t.microcode), Some(0x73));
    let tdx = policy.tdx.as_ref().expect("[tdx]");
    assert_eq!(tdx.xfam, Some(u64::from_le_bytes(q.body.xfam)));
    assert_eq!(tdx.rtmr3.map(|r| r.0), Some(q.body.rtmr[3]));

    let written = policy.to_toml("made by a test\n\nsecond paragraph");
    assert!(
        written.starts_with("# made by a test\n#\n# second paragraph\n"),
        "{written}"
    );
    assert_eq!(parse(&written), policy, "{written}");

    // A policy of one platform, a few keys.
    let sparse = parse(&format!("[tdx]\nrtmr2 = \"{}\"\n", "ab".repeat(48)));
    assert!(sparse.snp.is_none());
    assert_eq!(parse(&sparse.to_toml("")), sparse);
    // An empty platform table is a policy that adds nothing but its platform.
    assert_eq!(parse("[snp]").snp, Some(SnpReference::default()));
}

#[test]
fn unknown_keys_are_errors_that_name_them() {
    for (text, key) in [
        ("[sev]\nvmpl = 0", "sev"),
        ("[snp]\nvmpll = 0", "vmpll"),
        ("[snp]\nreport_data = \"00\"", "report_data"),
        ("[snp.guest_policy]\ndebugg = false", "debugg"),
        ("[snp.platform_info]\nsmt = true", "smt"),
        ("[snp.current_tcb_minimum]\nfmcc = 1", "fmcc"),
        ("[tdx]\nrtmr4 = \"00\"", "rtmr4"),
        ("[tdx.td_attributes]\nsept_ve = true", "sept_ve"),
        ("version = 1\n[snp]", "version"),
    ] {
        let e = error(text);
        assert!(e.contains(&format!("unknown field `{key}`")), "{text}: {e}");
        // The message says what is known, and where the key is.
        assert!(e.contains("expected"), "{text}: {e}");
        assert!(e.contains("line"), "{text}: {e}");
    }
}

#[test]
fn malformed_values_are_clear_errors() {
    let short = error(&format!("[snp]\nhost_data = \"{}\"", zeros(31)));
    assert!(
        short.contains("expected 64 hex digits (32 bytes), found 62 characters"),
        "{short}"
    );
    let long = error(&format!("[tdx]\nmrtd = \"{}\"", zeros(49)));
    assert!(
        long.contains("expected 96 hex digits (48 bytes), found 98"),
        "{long}"
    );
    let prefixed = error(&format!("[snp]\nfamily_id = \"0x{}\"", zeros(15)));
    assert!(prefixed.contains("is not hex"), "{prefixed}");
    let not_hex = error(&format!("[snp]\nimage_id = \"{}zz\"", zeros(15)));
    assert!(not_hex.contains("is not hex"), "{not_hex}");
    let number = error("[snp]\nhost_data = 5");
    assert!(
        number.contains("expected a string of 64 hex digits (32 bytes)"),
        "{number}"
    );
    let vmpl = error("[snp]\nvmpl = 4");
    assert!(
        vmpl.contains("snp.vmpl is 4, but VMPLs are 0 to 3"),
        "{vmpl}"
    );
    let negative = error("[snp]\nvmpl = -1");
    assert!(negative.contains("vmpl"), "{negative}");
    let tcb = error("[snp.launch_tcb_minimum]\nsnp = 256");
    assert!(tcb.contains("u8"), "{tcb}");
    let bit = error("[tdx.td_attributes]\ndebug = 0");
    assert!(bit.contains("expected a boolean"), "{bit}");
    for (abi, needle) in [
        ("\"1\"", "not an ABI version MAJOR.MINOR"),
        ("\"1.x\"", "not an ABI version MAJOR.MINOR"),
        ("\"1.256\"", "0 to 255"),
        ("1.5", "expected an ABI version"),
    ] {
        let e = error(&format!("[snp]\npolicy_abi_minimum = {abi}"));
        assert!(e.contains(needle), "{abi}: {e}");
    }
    let empty = error("# nothing\n");
    assert!(
        empty.contains("needs an [snp] table, a [tdx] table"),
        "{empty}"
    );
    let syntax = error("[snp\nvmpl = 0");
    assert!(syntax.contains("line 1"), "{syntax}");
    assert!(matches!(
        ReferencePolicy::from_bytes(&[0xff, 0xfe, 0x5b]),
        Err(PolicyError::NotText)
    ));
}

#[test]
fn control_characters_in_comments_are_written_escaped() {
    let policy = parse("[snp]\nvmpl = 0");
    let written = policy.to_toml("image a\rb\u{1b}[31m.igvm\ttabbed");
    assert!(
        written.starts_with(r"# image a\rb\u{1b}[31m.igvm\ttabbed"),
        "{written}"
    );
    assert_eq!(parse(&written), policy, "{written}");
}

#[test]
fn the_milan_report_meets_a_policy_of_its_own_values() {
    let r = milan();
    let policy = parse(&full_snp_text());
    let checks = check::snp(Some(&policy), &r, SnpProduct::Milan);
    for c in &checks {
        assert!(c.passed, "{}: {}", c.name, c.detail);
    }
    for n in [
        name::POLICY_SECTION,
        name::GUEST_SVN_MINIMUM,
        name::HOST_DATA,
        name::FAMILY_ID,
        name::IMAGE_ID,
        name::ID_KEY_DIGEST,
        name::AUTHOR_KEY_DIGEST,
        name::POLICY_ABI_MINIMUM,
        name::GUEST_POLICY,
        name::PLATFORM_INFO,
        name::CURRENT_TCB_MINIMUM,
        name::COMMITTED_TCB_MINIMUM,
        name::LAUNCH_TCB_MINIMUM,
        name::REPORTED_TCB_MINIMUM,
    ] {
        passed(&checks, n);
    }
    assert_eq!(checks.len(), 14);
    passed(&[check::snp_vmpl(&r, policy.snp.as_ref())], name::VMPL);
    // No policy, no checks (but vmpl).
    assert!(check::snp(None, &r, SnpProduct::Milan).is_empty());
}

#[test]
fn each_snp_field_that_differs_fails_its_check_with_both_values() {
    let policy = parse(&full_snp_text());
    let with = |edit: &dyn Fn(&mut AttestationReport)| {
        let mut r = milan();
        edit(&mut r);
        let mut checks = check::snp(Some(&policy), &r, SnpProduct::Milan);
        checks.push(check::snp_vmpl(&r, policy.snp.as_ref()));
        let failures: Vec<&str> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(failures.len(), 1, "{failures:?}");
        checks
    };
    let checks = with(&|r| r.host_data[31] = 1);
    failed(
        &checks,
        name::HOST_DATA,
        &["host_data", &zeros(32), &format!("{}01", zeros(31))],
    );
    let checks = with(&|r| r.family_id[0] = 0xfa);
    failed(&checks, name::FAMILY_ID, &["family_id", "fa"]);
    let checks = with(&|r| r.image_id[0] = 0x1d);
    failed(&checks, name::IMAGE_ID, &["image_id", "1d"]);
    let checks = with(&|r| r.id_key_digest = [7; 48]);
    failed(&checks, name::ID_KEY_DIGEST, &["id_key_digest", "0707"]);
    let checks = with(&|r| r.author_key_digest = [8; 48]);
    failed(
        &checks,
        name::AUTHOR_KEY_DIGEST,
        &["author_key_digest", "0808"],
    );
    let checks = with(&|r| r.vmpl = 3);
    failed(&checks, name::VMPL, &["expected 0", "VMPL 3"]);
    let checks = with(&|r| r.policy |= GuestPolicy::DEBUG);
    failed(
        &checks,
        name::GUEST_POLICY,
        &["policy 0xb0000", "requires DEBUG clear", "has it set"],
    );
    let checks = with(&|r| r.policy &= !GuestPolicy::SMT);
    failed(&checks, name::GUEST_POLICY, &["requires SMT set"]);
    let checks = with(&|r| r.platform_info |= PlatformInfo::TSME_EN);
    failed(
        &checks,
        name::PLATFORM_INFO,
        &["platform_info 0x3", "TSME_EN clear"],
    );
    // Milan layout: SNP in byte 6, microcode in byte 7.
    let checks = with(&|r| r.current_tcb = r.current_tcb & !(0xff << 48) | (7 << 48));
    failed(
        &checks,
        name::CURRENT_TCB_MINIMUM,
        &["current_tcb", "SNP at least 8, the report has 7"],
    );
    let checks = with(&|r| r.launch_tcb &= !(0xff << 56));
    failed(
        &checks,
        name::LAUNCH_TCB_MINIMUM,
        &["microcode at least 115, the report has 0"],
    );
    let checks = with(&|r| r.committed_tcb = 0);
    failed(&checks, name::COMMITTED_TCB_MINIMUM, &["committed_tcb"]);
    let checks = with(&|r| r.reported_tcb = 0);
    failed(
        &checks,
        name::REPORTED_TCB_MINIMUM,
        &["boot loader at least 1"],
    );

    // Minimums pass at or above, fail below.
    let svn = parse("[snp]\nguest_svn_minimum = 2\npolicy_abi_minimum = \"1.51\"");
    let mut r = milan();
    r.guest_svn = 1;
    let checks = check::snp(Some(&svn), &r, SnpProduct::Milan);
    failed(
        &checks,
        name::GUEST_SVN_MINIMUM,
        &["guest_svn", "at least 2", "has 1"],
    );
    failed(
        &checks,
        name::POLICY_ABI_MINIMUM,
        &["ABI 1.51 or later", "accepts 0.0 or later"],
    );
    r.guest_svn = 2;
    r.policy |= 0x0133;
    let checks = check::snp(Some(&svn), &r, SnpProduct::Milan);
    passed(&checks, name::GUEST_SVN_MINIMUM);
    passed(&checks, name::POLICY_ABI_MINIMUM);
    r.policy = r.policy & !0xffff | 0x0200;
    passed(
        &check::snp(Some(&svn), &r, SnpProduct::Milan),
        name::POLICY_ABI_MINIMUM,
    );
}

#[test]
fn the_vmpl_is_0_by_default_and_the_policys_with_one() {
    let mut r = milan();
    assert!(check::snp_vmpl(&r, None).passed);
    for vmpl in 1..=3 {
        r.vmpl = vmpl;
        let c = check::snp_vmpl(&r, None);
        assert!(!c.passed, "VMPL {vmpl}");
        assert!(c.detail.contains("the default"), "{}", c.detail);
        let policy = parse(&format!("[snp]\nvmpl = {vmpl}"));
        assert!(check::snp_vmpl(&r, policy.snp.as_ref()).passed);
        // A policy without `vmpl` keeps the default.
        let other = parse("[snp]\nguest_svn_minimum = 0");
        assert!(!check::snp_vmpl(&r, other.snp.as_ref()).passed);
    }
}

#[test]
fn fmc_exists_only_in_turins_tcb_layout() {
    let r = milan();
    let policy = parse("[snp.current_tcb_minimum]\nfmc = 1");
    let checks = check::snp(Some(&policy), &r, SnpProduct::Milan);
    failed(
        &checks,
        name::CURRENT_TCB_MINIMUM,
        &["FMC at least 1", "Milan's TCB_VERSION has no FMC"],
    );
    // Turin: FMC in byte 0, boot loader 1, TEE 2, SNP 3, microcode 7 (docs/specs.md 4.4).
    let mut turin = milan();
    turin.current_tcb = u64::from_le_bytes([2, 4, 0, 9, 0, 0, 0, 0x50]);
    let policy = parse("[snp.current_tcb_minimum]\nfmc = 2\nbootloader = 4\nsnp = 9");
    passed(
        &check::snp(Some(&policy), &turin, SnpProduct::Turin),
        name::CURRENT_TCB_MINIMUM,
    );
    let policy = parse("[snp.current_tcb_minimum]\nfmc = 3");
    failed(
        &check::snp(Some(&policy), &turin, SnpProduct::Turin),
        name::CURRENT_TCB_MINIMUM,
        &["FMC at least 3, the report has 2"],
    );
}

#[test]
fn the_real_quote_meets_a_policy_of_its_own_values() {
    let q = quote();
    let policy = parse(&full_tdx_text(&q));
    let checks = check::tdx(Some(&policy), &q);
    for c in &checks {
        assert!(c.passed, "{}: {}", c.name, c.detail);
    }
    let mut names = vec![
        name::POLICY_SECTION,
        name::MR_CONFIG_ID,
        name::MR_OWNER,
        name::MR_OWNER_CONFIG,
        name::MR_SEAM,
        name::MR_SIGNER_SEAM,
        name::XFAM,
        name::TEE_TCB_SVN_MINIMUM,
        name::TD_ATTRIBUTE_BITS,
    ];
    names.extend(name::RTMR);
    for n in &names {
        passed(&checks, n);
    }
    assert_eq!(checks.len(), names.len());
    assert!(check::tdx(None, &q).is_empty());
}

#[test]
fn each_tdx_field_that_differs_fails_its_check_with_both_values() {
    let real = quote();
    let policy = parse(&full_tdx_text(&real));
    let with = |edit: &dyn Fn(&mut crate::tdx::Quote)| {
        let mut q = quote();
        edit(&mut q);
        let checks = check::tdx(Some(&policy), &q);
        let failures: Vec<&str> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(failures.len(), 1, "{failures:?}");
        checks
    };
    let checks = with(&|q| q.body.mr_config_id = [0x11; 48]);
    failed(
        &checks,
        name::MR_CONFIG_ID,
        &[
            "mr_config_id",
            &hex::encode(real.body.mr_config_id),
            &"11".repeat(48),
        ],
    );
    let checks = with(&|q| q.body.mr_owner[0] ^= 1);
    failed(&checks, name::MR_OWNER, &["mr_owner"]);
    let checks = with(&|q| q.body.mr_owner_config[47] ^= 1);
    failed(&checks, name::MR_OWNER_CONFIG, &["mr_owner_config"]);
    for i in 0..4 {
        let checks = with(&|q| q.body.rtmr[i] = [0xee; 48]);
        failed(
            &checks,
            name::RTMR[i],
            &[
                &format!("rtmr{i}: the policy requires"),
                &hex::encode(real.body.rtmr[i]),
                &"ee".repeat(48),
            ],
        );
    }
    let checks = with(&|q| q.body.mr_seam[5] ^= 0x80);
    failed(&checks, name::MR_SEAM, &["mr_seam"]);
    let checks = with(&|q| q.body.mr_signer_seam[5] ^= 0x80);
    failed(&checks, name::MR_SIGNER_SEAM, &["mr_signer_seam"]);
    let checks = with(&|q| q.body.xfam = 0x3u64.to_le_bytes());
    failed(
        &checks,
        name::XFAM,
        &[
            &format!("requires {:#x}", u64::from_le_bytes(real.body.xfam)),
            "has 0x3",
        ],
    );
    let checks = with(&|q| q.body.td_attributes = (1u64 | attributes::MIGRATABLE).to_le_bytes());
    failed(
        &checks,
        name::TD_ATTRIBUTE_BITS,
        &["DEBUG clear, the quote has it set", "MIGRATABLE clear"],
    );
    let checks = with(&|q| q.body.tee_tcb_svn[2] = 0);
    if real.body.tee_tcb_svn[2] > 0 {
        failed(
            &checks,
            name::TEE_TCB_SVN_MINIMUM,
            &["byte 2 is 0, the policy requires at least"],
        );
    }
    // Above the minimum passes.
    let mut higher = quote();
    for b in &mut higher.body.tee_tcb_svn {
        *b = b.saturating_add(1);
    }
    passed(
        &check::tdx(Some(&policy), &higher),
        name::TEE_TCB_SVN_MINIMUM,
    );
}

#[test]
fn a_policy_without_the_evidences_platform_fails() {
    let snp_only = parse("[snp]\nvmpl = 0");
    let checks = check::tdx(Some(&snp_only), &quote());
    assert_eq!(checks.len(), 1);
    failed(&checks, name::POLICY_SECTION, &["no [tdx] table"]);
    let tdx_only = parse("[tdx]\nxfam = 3");
    let checks = check::snp(Some(&tdx_only), &milan(), SnpProduct::Milan);
    failed(&checks, name::POLICY_SECTION, &["no [snp] table"]);
}

#[test]
fn the_policys_measurement_is_the_expected_one_unless_another_differs() {
    let policy = parse(&format!("[snp]\nmeasurement = \"{MILAN_MEASUREMENT}\""));
    let mut expect = Expectations {
        reference: Some(policy),
        ..Default::default()
    };
    let measurement = decode_hex(MILAN_MEASUREMENT.as_bytes()).expect("hex");
    assert_eq!(
        expect.expected_measurement(EvidenceKind::SnpReport),
        Ok(Some(measurement.clone()))
    );
    // The policy has no [tdx] table: no MRTD expected.
    assert_eq!(
        expect.expected_measurement(EvidenceKind::TdxQuote),
        Ok(None)
    );
    let c = expect
        .measurement_check("measurement", EvidenceKind::SnpReport, &[0; 48])
        .expect("a check");
    assert!(
        !c.passed && c.detail.contains("(the policy's)"),
        "{}",
        c.detail
    );
    expect.measurement = Some(measurement.clone());
    assert_eq!(
        expect.expected_measurement(EvidenceKind::SnpReport),
        Ok(Some(measurement))
    );
    expect.measurement = Some(vec![0; 48]);
    let conflict = expect
        .expected_measurement(EvidenceKind::SnpReport)
        .expect_err("they differ");
    assert!(conflict.contains("snp.measurement"), "{conflict}");
    let c = expect
        .measurement_check("measurement", EvidenceKind::SnpReport, &[0; 48])
        .expect("a check");
    assert!(!c.passed, "{}", c.detail);
}

proptest! {
    /// Whatever the text, reading it is an answer, never a panic.
    #[test]
    fn any_text_is_read_without_panicking(text in "\\PC{0,200}") {
        let _ = ReferencePolicy::from_toml(&text);
    }

    /// Valid policies with one character changed are read or refused, never a panic.
    #[test]
    fn mutated_policies_are_read_without_panicking(at in 0usize..2000, with in any::<char>()) {
        let text = full_snp_text() + &full_tdx_text(&quote());
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % chars.len();
        chars[at] = with;
        let mutated: String = chars.into_iter().collect();
        let _ = ReferencePolicy::from_toml(&mutated);
    }

    /// Any byte string of the right length round-trips through its hex.
    #[test]
    fn bytes_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
        let text = Bytes(bytes).to_string();
        prop_assert_eq!(text.parse::<Bytes<32>>(), Ok(Bytes(bytes)));
        prop_assert!(text.parse::<Bytes<16>>().is_err());
    }
}
