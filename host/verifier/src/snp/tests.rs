//! SNP verification against the real vectors in `tests/vectors/virtee-sev` (their
//! known answers: `tests/vectors/README.md` and the published MANIFEST.md).

use super::*;
use crate::test_vectors::{middle_of, read};
use crate::{decode_hex, AttestError, Evidence, Inputs};
use nacre_shared_abi::snp::report::SIGNED_SIZE;
use proptest::prelude::*;
use std::sync::OnceLock;
use std::time::Duration;
use zerocopy::IntoBytes;

const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";
const REPORT_DATA: &str = "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd";
const CHIP_ID: &str = "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6";
const TURIN_HW_ID: &str = "1e550a8ee5cf9f4d";

struct Milan {
    report_bytes: Vec<u8>,
    vcek: Cert,
    chain: SnpChain,
    roots: TrustAnchors,
}

fn milan() -> &'static Milan {
    static MILAN: OnceLock<Milan> = OnceLock::new();
    MILAN.get_or_init(|| {
        let report_bytes =
            decode_hex(&read("virtee-sev", "report_milan.hex")).expect("the report is hex");
        let vcek = Cert::from_der_or_pem(&read("virtee-sev", "vcek_milan.der")).expect("VCEK");
        let bundle = [
            read("virtee-sev", "milan_ask.pem"),
            read("virtee-sev", "milan_ark.pem"),
        ]
        .concat();
        let chain = SnpChain::from_pem(&bundle).expect("ASK then ARK");
        Milan {
            report_bytes,
            vcek,
            chain,
            roots: TrustAnchors::built_in().expect("built-in roots"),
        }
    })
}

fn report(bytes: &[u8]) -> AttestationReport {
    AttestationReport::from_bytes(bytes).expect("a valid report")
}

/// Verify `bytes` as the Milan report with its real chain, inside the VCEK's validity.
fn verify_milan(bytes: &[u8], expect: &Expectations) -> Verification {
    let m = milan();
    verify_report(
        &report(bytes),
        &m.vcek,
        Some(&m.chain),
        None,
        &m.roots,
        expect,
        middle_of(&m.vcek),
    )
    .expect("verification runs")
}

fn assert_failed(v: &Verification, name: &str) {
    let check = v
        .check(name)
        .unwrap_or_else(|| panic!("no check {name}: {v:#?}"));
    assert!(!check.passed, "{name} passed: {}", check.detail);
    assert!(!v.passed());
}

#[test]
fn milan_report_verifies_with_its_chain_and_vcek() {
    let m = milan();
    let v = verify_milan(&m.report_bytes, &Expectations::default());
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    for name in [
        check::SIGNATURE_ALGORITHM,
        check::RESERVED_ZERO,
        check::SIGNING_KEY,
        check::ARK_TRUSTED,
        check::ARK_SELF_SIGNED,
        check::ASK_SIGNED_BY_ARK,
        check::VCEK_SIGNED_BY_ASK,
        check::ARK_VALIDITY,
        check::ASK_VALIDITY,
        check::VCEK_VALIDITY,
        check::REPORT_SIGNATURE,
        check::REPORTED_TCB,
        check::CHIP_ID,
        check::POLICY_RESERVED_BIT,
        check::POLICY_DEBUG,
    ] {
        assert!(v.check(name).is_some_and(|c| c.passed), "{name}");
    }

    // The same with the built-in chain of the VCEK's product, through the
    // evidence detection and the expected values of MANIFEST.md.
    let evidence = Evidence::parse(&read("virtee-sev", "report_milan.hex")).expect("SNP report");
    let mut inputs = Inputs::new(&m.roots);
    inputs.at = middle_of(&m.vcek);
    inputs.vcek = Some(m.vcek.clone());
    inputs.expect = Expectations {
        measurement: decode_hex(MEASUREMENT.as_bytes()).ok(),
        report_data: decode_hex(REPORT_DATA.as_bytes()).ok(),
        allow_debug: false,
        policy: None,
        reference: None,
    };
    let v = crate::verify(&evidence, &inputs).expect("verification runs");
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert!(v.check(check::MEASUREMENT).is_some_and(|c| c.passed));
    assert!(v.check(check::REPORT_DATA).is_some_and(|c| c.passed));
    assert_eq!(v.claim("measurement"), Some(MEASUREMENT));
    let json = v.to_json();
    assert_eq!(json["verified"], true);
    assert_eq!(json["evidence"], "snp-report");
    assert_eq!(json["failed"].as_array().map(Vec::len), Some(0));
}

#[test]
fn milan_report_fields_match_the_known_answers() {
    let m = milan();
    let r = report(&m.report_bytes);
    assert_eq!(r.version, 2);
    assert_eq!(r.guest_svn, 0);
    assert_eq!(r.policy, 0x30000);
    assert_eq!(r.vmpl, 0);
    assert_eq!(r.signature_algo, 1);
    assert_eq!(r.platform_info, 0x1);
    let tcb_bytes = [0x03, 0, 0, 0, 0, 0, 0x08, 0x73];
    for raw in [r.current_tcb, r.reported_tcb, r.committed_tcb, r.launch_tcb] {
        assert_eq!(raw.to_le_bytes(), tcb_bytes);
        assert_eq!(
            TcbVersion::decode(raw, SnpProduct::Milan),
            TcbVersion {
                fmc: None,
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 0x73
            }
        );
    }
    assert_eq!(hex::encode(r.measurement), MEASUREMENT);
    assert_eq!(hex::encode(r.report_data), REPORT_DATA);
    assert_eq!(hex::encode(r.chip_id), CHIP_ID);
    assert_eq!(r.signer().signing_key(), Ok(SigningKey::Vcek));
    assert_eq!(r.first_nonzero_reserved(), None);

    // The VCEK: product, TCB extensions and hwID.
    let product_name = m
        .vcek
        .extension(vcek_oid::PRODUCT_NAME)
        .and_then(decode_text);
    assert_eq!(product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(vcek_product(&m.vcek).ok(), Some(SnpProduct::Milan));
    assert_eq!(
        VcekTcb::of(&m.vcek),
        VcekTcb {
            bootloader: Some(3),
            tee: Some(0),
            snp: Some(8),
            microcode: Some(0x73),
            fmc: None
        }
    );
    assert_eq!(
        vcek_hw_id(&m.vcek, SnpProduct::Milan)
            .map(|id| hex::encode(&id))
            .as_deref(),
        Some(CHIP_ID)
    );
    assert_eq!(
        m.vcek
            .certificate()
            .tbs_certificate
            .serial_number
            .as_bytes(),
        [0]
    );
}

#[test]
fn milan_vector_ark_and_ask_are_the_built_in_ones() {
    let m = milan();
    let root = m.roots.amd(SnpProduct::Milan).expect("a Milan root");
    assert_eq!(m.chain.ark.der(), root.ark.der());
    assert_eq!(m.chain.ask.der(), root.ask.der());
}

#[test]
fn every_bit_flip_of_the_signed_part_fails() {
    let m = milan();
    let mut bytes = m.report_bytes.clone();
    for bit in 0..SIGNED_SIZE * 8 {
        bytes[bit / 8] ^= 1 << (bit % 8);
        match AttestationReport::from_bytes(&bytes) {
            // A flipped version makes the report unusable: not verified either.
            Err(_) => assert!(bit < 32, "bit {bit}"),
            Ok(r) => {
                let v = verify_report(
                    &r,
                    &m.vcek,
                    Some(&m.chain),
                    None,
                    &m.roots,
                    &Expectations::default(),
                    middle_of(&m.vcek),
                )
                .expect("verification runs");
                assert!(!v.passed(), "bit {bit} flipped and still verified");
                assert_failed(&v, check::REPORT_SIGNATURE);
            }
        }
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

#[test]
fn turin_chain_verifies_and_its_hw_id_has_8_bytes() {
    let roots = TrustAnchors::built_in().expect("built-in roots");
    let chain = SnpChain::from_pem(&read("virtee-sev", "cert_chain_turin")).expect("ASK, ARK");
    let vcek = Cert::from_der_or_pem(&read("virtee-sev", "vcek_turin.der")).expect("VCEK");
    assert_eq!(vcek_product(&vcek).ok(), Some(SnpProduct::Turin));
    let root = roots.amd(SnpProduct::Turin).expect("a Turin root");
    assert_eq!(chain.ark.subject_name(), "ARK-Turin");
    assert_eq!(chain.ask.subject_name(), "SEV-Turin");
    assert_eq!(chain.ark, root.ark);
    assert_eq!(chain.ask, root.ask);
    chain
        .ark
        .verify_issued_by(&chain.ark)
        .expect("ARK-Turin signs itself");
    chain
        .ask
        .verify_issued_by(&chain.ark)
        .expect("ARK-Turin signs SEV-Turin");
    vcek.verify_issued_by(&chain.ask)
        .expect("SEV-Turin signs the VCEK");
    let at = middle_of(&vcek);
    for cert in [&chain.ark, &chain.ask, &vcek] {
        assert!(cert.valid_at(at).is_ok(), "{}", cert.subject_name());
    }
    let hw_id = vcek_hw_id(&vcek, SnpProduct::Turin).expect("an 8-byte hwID");
    assert_eq!(hex::encode(&hw_id), TURIN_HW_ID);
    assert_eq!(
        VcekTcb::of(&vcek),
        VcekTcb {
            bootloader: Some(0),
            tee: Some(0),
            snp: Some(0),
            microcode: Some(9),
            fmc: Some(0)
        }
    );

    // A report with Turin's layout and this chip ID agrees with the VCEK on both
    // the TCB and the chip ID (its signature is not the VCEK's, of course).
    let mut r = report(&milan().report_bytes);
    r.chip_id = [0; 64];
    r.chip_id[..8].copy_from_slice(&hw_id);
    r.reported_tcb = TcbVersion {
        fmc: Some(0),
        bootloader: 0,
        tee: 0,
        snp: 0,
        microcode: 9,
    }
    .encode(SnpProduct::Turin);
    let v = verify_report(
        &r,
        &vcek,
        Some(&chain),
        None,
        &roots,
        &Expectations::default(),
        at,
    )
    .expect("verification runs");
    for name in [
        check::ARK_TRUSTED,
        check::ASK_SIGNED_BY_ARK,
        check::VCEK_SIGNED_BY_ASK,
        check::REPORTED_TCB,
        check::CHIP_ID,
    ] {
        assert!(v.check(name).is_some_and(|c| c.passed), "{name}: {v:#?}");
    }
    assert_failed(&v, check::REPORT_SIGNATURE);
    // One SPL off fails.
    r.reported_tcb = TcbVersion {
        fmc: Some(0),
        bootloader: 1,
        tee: 0,
        snp: 0,
        microcode: 9,
    }
    .encode(SnpProduct::Turin);
    let v = verify_report(
        &r,
        &vcek,
        Some(&chain),
        None,
        &roots,
        &Expectations::default(),
        at,
    )
    .expect("verification runs");
    assert_failed(&v, check::REPORTED_TCB);
}

#[test]
fn wrong_expected_values_fail_by_name() {
    let m = milan();
    let mut wrong = decode_hex(MEASUREMENT.as_bytes()).expect("hex");
    wrong[0] ^= 1;
    let v = verify_milan(
        &m.report_bytes,
        &Expectations {
            measurement: Some(wrong),
            ..Default::default()
        },
    );
    assert_failed(&v, check::MEASUREMENT);
    assert_eq!(v.failures().count(), 1);

    let v = verify_milan(
        &m.report_bytes,
        &Expectations {
            report_data: Some(vec![0xd4, 0x47]),
            ..Default::default()
        },
    );
    assert_failed(&v, check::REPORT_DATA);
    assert_eq!(v.failures().count(), 1);
}

#[test]
fn a_debug_policy_is_refused_unless_allowed() {
    let m = milan();
    let mut r = report(&m.report_bytes);
    r.policy |= GuestPolicy::DEBUG;
    let bytes = r.as_bytes().to_vec();
    let v = verify_milan(&bytes, &Expectations::default());
    assert_failed(&v, check::POLICY_DEBUG);
    // The edit is not signed, of course.
    assert_failed(&v, check::REPORT_SIGNATURE);
    let allowed = verify_milan(
        &bytes,
        &Expectations {
            allow_debug: true,
            ..Default::default()
        },
    );
    assert!(allowed.check(check::POLICY_DEBUG).is_some_and(|c| c.passed));

    r.policy &= !GuestPolicy::RESERVED_MUST_BE_ONE;
    let v = verify_milan(r.as_bytes(), &Expectations::default());
    assert_failed(&v, check::POLICY_RESERVED_BIT);
}

#[test]
fn reserved_bytes_signature_algorithm_and_signing_key_are_checked() {
    let m = milan();
    let mut bytes = m.report_bytes.clone();
    bytes[0x1A0 - 1] = 1;
    assert_failed(
        &verify_milan(&bytes, &Expectations::default()),
        check::RESERVED_ZERO,
    );

    let mut r = report(&m.report_bytes);
    r.signature_algo = 2;
    assert_failed(
        &verify_milan(r.as_bytes(), &Expectations::default()),
        check::SIGNATURE_ALGORITHM,
    );

    let mut r = report(&m.report_bytes);
    r.signer_info = 1 << 2;
    assert_failed(
        &verify_milan(r.as_bytes(), &Expectations::default()),
        check::SIGNING_KEY,
    );

    // Unsigned bytes after S must be zero too.
    let mut bytes = m.report_bytes.clone();
    bytes[0x400] = 1;
    let v = verify_milan(&bytes, &Expectations::default());
    assert_failed(&v, check::RESERVED_ZERO);
    assert!(v.check(check::REPORT_SIGNATURE).is_some_and(|c| c.passed));
}

#[test]
fn another_products_ark_is_not_trusted() {
    let m = milan();
    let turin = SnpChain::from_pem(&read("virtee-sev", "cert_chain_turin")).expect("chain");
    let v = verify_report(
        &report(&m.report_bytes),
        &m.vcek,
        Some(&turin),
        None,
        &m.roots,
        &Expectations::default(),
        middle_of(&m.vcek),
    )
    .expect("verification runs");
    assert_failed(&v, check::ARK_TRUSTED);
    assert_failed(&v, check::ASK_SIGNED_BY_ARK);
    assert_failed(&v, check::VCEK_SIGNED_BY_ASK);
}

#[test]
fn certificates_outside_their_validity_fail() {
    let m = milan();
    let late = m.vcek.not_after() + Duration::from_secs(86_400);
    let v = verify_report(
        &report(&m.report_bytes),
        &m.vcek,
        None,
        None,
        &m.roots,
        &Expectations::default(),
        late,
    )
    .expect("verification runs");
    assert_failed(&v, check::VCEK_VALIDITY);
    assert_eq!(v.failures().count(), 1);
    let early = m.vcek.not_before() - Duration::from_secs(1);
    let v = verify_report(
        &report(&m.report_bytes),
        &m.vcek,
        None,
        None,
        &m.roots,
        &Expectations::default(),
        early,
    )
    .expect("verification runs");
    assert_failed(&v, check::VCEK_VALIDITY);
}

#[test]
fn unusable_inputs_are_errors() {
    let m = milan();
    let evidence = Evidence::Snp(Box::new(report(&m.report_bytes)));
    let inputs = Inputs::new(&m.roots);
    assert!(matches!(
        crate::verify(&evidence, &inputs),
        Err(AttestError::Inputs(_))
    ));

    let mut inputs = Inputs::new(&m.roots);
    inputs.vcek = Some(m.vcek.clone());
    inputs.expect.measurement = Some(vec![0; 32]);
    assert!(matches!(
        crate::verify(&evidence, &inputs),
        Err(AttestError::ExpectedLength { .. })
    ));

    // A VCEK naming no known product.
    let root = m.roots.amd(SnpProduct::Milan).expect("a Milan root");
    assert!(matches!(
        verify_report(
            &report(&m.report_bytes),
            &root.ark,
            None,
            None,
            &m.roots,
            &Expectations::default(),
            middle_of(&m.vcek)
        ),
        Err(SnpError::UnknownProduct { .. })
    ));
    assert!(matches!(
        SnpChain::from_pem(&read("virtee-sev", "milan_ark.pem")),
        Err(SnpError::ChainLength(1))
    ));

    // The hex report with whitespace, and truncated.
    let hex_text = read("virtee-sev", "report_milan.hex");
    let spaced: Vec<u8> = hex_text
        .chunks(64)
        .flat_map(|line| line.iter().copied().chain(*b"\n  "))
        .collect();
    assert!(matches!(Evidence::parse(&spaced), Ok(Evidence::Snp(_))));
    assert!(Evidence::parse(&hex_text[..hex_text.len() - 2]).is_err());
    assert!(Evidence::parse(&hex_text[..hex_text.len() - 1]).is_err());
    assert!(Evidence::parse(&m.report_bytes[..0x49F]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x600)) {
        let _ = Evidence::parse(&bytes);
        let _ = Cert::from_der_or_pem(&bytes);
        let _ = SnpChain::from_pem(&bytes);
    }

    #[test]
    fn a_flipped_bit_anywhere_never_panics(bit in 0..(0x4A0usize * 8), cert_bit in 0..(1360usize * 8)) {
        let m = milan();
        let mut bytes = m.report_bytes.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut vcek = m.vcek.der().to_vec();
        vcek[cert_bit / 8] ^= 1 << (cert_bit % 8);
        if let (Ok(Evidence::Snp(r)), Ok(vcek)) = (Evidence::parse(&bytes), Cert::from_der(&vcek)) {
            if let Ok(v) = verify_report(&r, &vcek, None, None, &m.roots, &Expectations::default(), middle_of(&m.vcek)) {
                prop_assert!(!v.passed());
            }
        }
    }
}
