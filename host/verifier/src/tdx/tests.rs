//! TDX quote parsing and verification against the real quote in
//! `tests/vectors/go-tdx-guest` (known answers: the published MANIFEST.md).

use super::*;
use crate::test_vectors::{middle_of, read};
use crate::{decode_hex, AttestError, Evidence, Inputs};
use proptest::prelude::*;
use std::sync::OnceLock;

const MRTD: &str = "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb";
const REPORT_DATA: &str = "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113";
/// Where the signed data of a version 4 quote starts: header and body end here.
const V4_SIGNED_END: usize = 0x278;
/// Where the PEM chain starts in the real quote: signed data size, signature, key,
/// certification data header, QE report, its signature, auth data size and data,
/// and the PCK chain's type and size.
const PEM_CHAIN_AT: usize = V4_SIGNED_END + 4 + 64 + 64 + 6 + 384 + 64 + 2 + 32 + 6;

struct Vector {
    bytes: Vec<u8>,
    roots: TrustAnchors,
    /// Inside the validity of every certificate of the quote's chain.
    at: SystemTime,
}

fn vector() -> &'static Vector {
    static VECTOR: OnceLock<Vector> = OnceLock::new();
    VECTOR.get_or_init(|| {
        let bytes = read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat");
        let quote = Quote::parse(&bytes).expect("the real quote parses");
        let chain = quote.pck_chain().expect("its PCK chain decodes");
        // The PCK certificate has the shortest validity of the chain.
        let at = middle_of(&chain[0]);
        Vector {
            bytes,
            roots: TrustAnchors::built_in().expect("built-in roots"),
            at,
        }
    })
}

fn verify_bytes(bytes: &[u8], expect: &Expectations) -> Result<Verification, TdxError> {
    let v = vector();
    verify_quote(&Quote::parse(bytes)?, &v.roots, expect, v.at, None)
}

fn assert_failed(v: &Verification, name: &str) {
    let check = v
        .check(name)
        .unwrap_or_else(|| panic!("no check {name}: {v:#?}"));
    assert!(!check.passed, "{name} passed: {}", check.detail);
    assert!(!v.passed());
}

#[test]
fn real_quote_verifies_at_a_pinned_time() {
    let v = vector();
    let verification = verify_bytes(&v.bytes, &Expectations::default()).expect("verification runs");
    assert!(
        verification.passed(),
        "{:#?}",
        verification.failures().collect::<Vec<_>>()
    );
    for name in check::ALWAYS {
        assert!(verification.check(name).is_some_and(|c| c.passed), "{name}");
    }

    // Through the evidence detection, with MANIFEST.md's MRTD and report data.
    let evidence = Evidence::parse(&v.bytes).expect("a TDX quote");
    assert!(matches!(evidence, Evidence::Tdx(_)));
    let mut inputs = Inputs::new(&v.roots);
    inputs.at = v.at;
    inputs.expect = Expectations {
        measurement: decode_hex(MRTD.as_bytes()).ok(),
        report_data: decode_hex(REPORT_DATA.as_bytes()).ok(),
        allow_debug: false,
        policy: None,
        reference: None,
    };
    let verification = crate::verify(&evidence, &inputs).expect("verification runs");
    assert!(verification.passed());
    assert!(verification.check(check::MRTD).is_some_and(|c| c.passed));
    assert!(verification
        .check(check::REPORT_DATA)
        .is_some_and(|c| c.passed));
    assert_eq!(verification.to_json()["evidence"], "tdx-quote");
}

#[test]
fn real_quote_fields_match_the_known_answers() {
    let v = vector();
    let q = Quote::parse(&v.bytes).expect("parses");
    assert_eq!(q.version, 4);
    assert_eq!(q.header.att_key_type, ATT_KEY_TYPE_ECDSA_P256);
    assert_eq!(q.header.tee_type, TEE_TYPE_TDX);
    assert_eq!(q.header.qe_vendor_id, INTEL_QE_VENDOR_ID);
    assert_eq!(q.signed_bytes().len(), V4_SIGNED_END);
    assert!(q.body15.is_none());
    assert_eq!(hex::encode(q.body.mr_td), MRTD);
    assert_eq!(hex::encode(q.body.td_attributes), "0000004000000000");
    assert_eq!(hex::encode(q.body.xfam), "e71a060000000000");
    assert_eq!(q.body.rtmr[3], [0; 48]);
    assert_eq!(hex::encode(q.body.report_data), REPORT_DATA);
    // Absolute offsets of docs/specs.md 6.6.
    assert_eq!(&v.bytes[0xB8..0xE8], &q.body.mr_td);
    assert_eq!(&v.bytes[0x238..0x278], &q.body.report_data);
    assert_eq!(q.qe_report.isv_prod_id, 2);
    assert_eq!(q.qe_report.isv_svn, 4);
    assert_eq!(q.qe_report.mr_signer, INTEL_QE_MRSIGNER);
    assert_eq!(q.qe_auth_data.len(), 32);
    // go-tdx-guest appends bytes after the signed data to its test quote.
    assert_eq!(q.trailing, 39);
    let chain = q.pck_chain().expect("PCK chain");
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0].subject_name(), "Intel SGX PCK Certificate");
    assert_eq!(chain[1].subject_name(), "Intel SGX PCK Platform CA");
    assert_eq!(&chain[2], v.roots.intel());
    assert_eq!(
        chain[2].spki_sha256().ok(),
        Some(crate::roots::INTEL_SGX_ROOT_CA_SPKI_SHA256)
    );
}

#[test]
fn every_bit_flip_of_the_signed_part_fails() {
    let v = vector();
    let mut bytes = v.bytes.clone();
    for bit in 0..V4_SIGNED_END * 8 {
        bytes[bit / 8] ^= 1 << (bit % 8);
        match verify_bytes(&bytes, &Expectations::default()) {
            // A flipped version, key type or TEE type makes the quote unusable.
            Err(_) => assert!(bit < 64, "bit {bit}"),
            Ok(verification) => {
                assert!(
                    !verification.passed(),
                    "bit {bit} flipped and still verified"
                );
                assert_failed(&verification, check::QUOTE_SIGNATURE);
            }
        }
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

#[test]
fn flips_in_the_signatures_key_and_qe_report_fail() {
    let v = vector();
    // Quote signature, attestation key, QE report, its signature, QE auth data.
    for (at, name) in [
        (0x27C, check::QUOTE_SIGNATURE),
        (0x2BC + 5, check::QUOTE_SIGNATURE),
        (0x302 + 0x10, check::QE_REPORT_SIGNATURE),
        (0x302 + 384 + 3, check::QE_REPORT_SIGNATURE),
        (0x302 + 384 + 64 + 2, check::QE_REPORT_DATA),
    ] {
        let mut bytes = v.bytes.clone();
        bytes[at] ^= 0x01;
        let verification = verify_bytes(&bytes, &Expectations::default()).expect("runs");
        assert_failed(&verification, name);
    }
}

#[test]
fn wrong_expected_values_and_debug_fail_by_name() {
    let v = vector();
    let mut wrong = decode_hex(MRTD.as_bytes()).expect("hex");
    wrong[47] ^= 0x80;
    let verification = verify_bytes(
        &v.bytes,
        &Expectations {
            measurement: Some(wrong),
            report_data: Some(vec![0x6c, 0x63]),
            allow_debug: false,
            policy: None,
            reference: None,
        },
    )
    .expect("runs");
    assert_failed(&verification, check::MRTD);
    assert_failed(&verification, check::REPORT_DATA);
    assert_eq!(verification.failures().count(), 2);

    // DEBUG set in a copy: refused unless allowed; the edit breaks the signature.
    let mut bytes = v.bytes.clone();
    bytes[0x30 + 0x78] |= 1;
    let verification = verify_bytes(&bytes, &Expectations::default()).expect("runs");
    assert_failed(&verification, check::TD_DEBUG);
    assert_failed(&verification, check::QUOTE_SIGNATURE);
    let allowed = verify_bytes(
        &bytes,
        &Expectations {
            allow_debug: true,
            ..Default::default()
        },
    )
    .expect("runs");
    assert!(allowed.check(check::TD_DEBUG).is_some_and(|c| c.passed));
}

#[test]
fn certificates_outside_their_validity_fail() {
    let v = vector();
    let q = Quote::parse(&v.bytes).expect("parses");
    let pck = &q.pck_chain().expect("chain")[0];
    let late = pck.not_after() + std::time::Duration::from_secs(1);
    let verification =
        verify_quote(&q, &v.roots, &Expectations::default(), late, None).expect("runs");
    assert_failed(&verification, check::PCK_VALIDITY);
    assert_eq!(verification.failures().count(), 1);
}

#[test]
fn truncated_and_malformed_quotes_are_errors() {
    let v = vector();
    let signed_end = v.bytes.len() - 39;
    for len in 0..signed_end {
        assert!(Quote::parse(&v.bytes[..len]).is_err(), "{len} bytes parsed");
    }
    assert!(Quote::parse(&v.bytes[..signed_end]).is_ok());
    // A size that takes in some of the 39 bytes after the signed data (or a size
    // inside it that leaves bytes unread) is refused: those bytes are no part's.
    let sizes = |at: usize, delta: u32| {
        let mut bytes = v.bytes.clone();
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + delta;
        bytes[at..at + 4].copy_from_slice(&size.to_le_bytes());
        Quote::parse(&bytes)
    };
    for delta in [1, 4, 39] {
        assert!(
            matches!(
                sizes(V4_SIGNED_END, delta),
                Err(TdxError::Unaccounted { what: "the signed data", extra }) if extra == delta as usize
            ),
            "+{delta}"
        );
    }
    // Both sizes grown alike: the bytes end up in the QE report certification data.
    let cert_size_at = V4_SIGNED_END + 4 + 64 + 64 + 2;
    let mut both = v.bytes.clone();
    for at in [V4_SIGNED_END, cert_size_at] {
        let size = u32::from_le_bytes(both[at..at + 4].try_into().unwrap());
        both[at..at + 4].copy_from_slice(&(size + 8).to_le_bytes());
    }
    assert!(matches!(
        Quote::parse(&both),
        Err(TdxError::Unaccounted {
            what: "the QE report certification data",
            extra: 8
        })
    ));
    let mut shorter = v.bytes.clone();
    let size = u32::from_le_bytes(shorter[cert_size_at..cert_size_at + 4].try_into().unwrap());
    shorter[cert_size_at..cert_size_at + 4].copy_from_slice(&(size - 1).to_le_bytes());
    assert!(matches!(
        Quote::parse(&shorter),
        Err(TdxError::Truncated { .. })
    ));
    let edit = |at: usize, value: u8| {
        let mut bytes = v.bytes.clone();
        bytes[at] = value;
        Quote::parse(&bytes)
    };
    assert!(matches!(edit(0, 3), Err(TdxError::Version(3))));
    assert!(matches!(edit(2, 3), Err(TdxError::AttestationKeyType(3))));
    assert!(matches!(edit(4, 0), Err(TdxError::TeeType(0))));
    assert!(matches!(
        edit(0x2FC, 5),
        Err(TdxError::CertDataType { found: 5, .. })
    ));
    // A PCK chain that does not decode is an error, not a failed check.
    let mut bytes = v.bytes.clone();
    let pem_at = PEM_CHAIN_AT + 100;
    bytes[pem_at] = b'!';
    let q = Quote::parse(&bytes).expect("the framing is intact");
    assert!(matches!(
        verify_quote(&q, &v.roots, &Expectations::default(), v.at, None),
        Err(TdxError::PckChain(_))
    ));
}

#[test]
fn version_5_quotes_parse() {
    let v = vector();
    // The same body as a version 5 quote with a TDX 1.0 body, and as one with a
    // TDX 1.5 body (64 more bytes); neither is signed any more.
    for (body_type, extra) in [(BODY_TYPE_TDX10, 0usize), (BODY_TYPE_TDX15, 64)] {
        let size = u32::try_from(TD_QUOTE_BODY_SIZE + extra).expect("small");
        let mut bytes = v.bytes[..QUOTE_HEADER_SIZE].to_vec();
        bytes[0] = 5;
        bytes.extend(body_type.to_le_bytes());
        bytes.extend(size.to_le_bytes());
        bytes.extend(&v.bytes[QUOTE_HEADER_SIZE..V4_SIGNED_END]);
        bytes.extend(std::iter::repeat_n(0xAB, extra));
        bytes.extend(&v.bytes[V4_SIGNED_END..]);
        let q = Quote::parse(&bytes).expect("a version 5 quote");
        assert_eq!(q.version, 5);
        assert_eq!(hex::encode(q.body.mr_td), MRTD);
        assert_eq!(
            q.signed_bytes().len(),
            V5_BODY_OFFSET + TD_QUOTE_BODY_SIZE + extra
        );
        assert_eq!(q.body15.is_some(), extra > 0);
        let verification =
            verify_quote(&q, &v.roots, &Expectations::default(), v.at, None).expect("runs");
        assert_failed(&verification, check::QUOTE_SIGNATURE);
        assert!(verification
            .check(check::QE_REPORT_SIGNATURE)
            .is_some_and(|c| c.passed));
    }
    let mut bytes = v.bytes.clone();
    bytes[0] = 5;
    assert!(matches!(
        Quote::parse(&bytes),
        Err(TdxError::BodyType(_) | TdxError::BodySize { .. })
    ));
}

#[test]
fn collateral_is_decoded_and_bad_collateral_fails_the_tcb_check() {
    assert!(matches!(
        collateral_from_json(b"{"),
        Err(TdxError::Collateral(_))
    ));
    assert!(matches!(
        collateral_from_json(b"[]"),
        Err(TdxError::Collateral(_))
    ));
    let bogus = Collateral {
        pck_crl_issuer_chain: String::new(),
        root_ca_crl: vec![1, 2, 3],
        pck_crl: Vec::new(),
        tcb_info_issuer_chain: String::new(),
        tcb_info: "{}".into(),
        tcb_info_signature: Vec::new(),
        qe_identity_issuer_chain: String::new(),
        qe_identity: "{}".into(),
        qe_identity_signature: Vec::new(),
        pck_certificate_chain: None,
    };
    let json = serde_json::to_vec(&bogus).expect("serialises");
    let collateral = collateral_from_json(&json).expect("round trips");
    assert_eq!(collateral, bogus);

    let v = vector();
    let q = Quote::parse(&v.bytes).expect("parses");
    let verification = verify_quote(
        &q,
        &v.roots,
        &Expectations::default(),
        v.at,
        Some(&collateral),
    )
    .expect("runs");
    assert_failed(&verification, check::TCB_STATUS);
    assert_eq!(verification.failures().count(), 1);

    // Collateral belongs to TDX, a VCEK to SNP.
    let evidence = Evidence::Tdx(Box::new(q));
    let mut inputs = Inputs::new(&v.roots);
    inputs.vcek = Some(v.roots.intel().clone());
    assert!(matches!(
        crate::verify(&evidence, &inputs),
        Err(AttestError::Inputs(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_flipped_bit_anywhere_never_panics(bit in 0..(4974usize * 8)) {
        let v = vector();
        let mut bytes = v.bytes.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(Evidence::Tdx(q)) = Evidence::parse(&bytes) {
            if let Ok(verification) = verify_quote(&q, &v.roots, &Expectations::default(), v.at, None) {
                // Everything up to the PEM chain is signed or bound.
                if bit < PEM_CHAIN_AT * 8 {
                    prop_assert!(!verification.passed(), "bit {}", bit);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x1400)) {
        let _ = Quote::parse(&bytes);
        let mut framed = vector().bytes[..0x30].to_vec();
        framed.extend(&bytes);
        if let Ok(q) = Quote::parse(&framed) {
            let _ = verify_quote(&q, &vector().roots, &Expectations::default(), vector().at, None);
        }
    }
}

#[test]
fn dcap_errors_read_as_words() {
    use rustls_pki_types::UnixTime;
    let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let crl = webpki::Error::CrlExpired {
        time: at(3_058_078_803),
        next_update: at(2_524_607_999),
    };
    // dcap-qvl's own sentences stay; webpki's debug text is replaced.
    let causes = vec![
        "Failed to verify certificate chain".to_owned(),
        crl.to_string(),
    ];
    assert_eq!(
        dcap_error_text(&causes, Some(&crl)),
        "Failed to verify certificate chain: a CRL is out of date: its next update was \
         due at 2049-12-31T23:59:59Z (checked at 2066-11-27T10:20:03Z)"
    );
    assert_eq!(
        dcap_error_text(&["TCBInfo expired".to_owned()], None),
        "TCBInfo expired"
    );
    // A missing PCK extension is named by its OIDs, not by their debug form.
    assert_eq!(
        dcap_error_text(
            &[
                "Intel extension path [ObjectIdentifier(1.2.840.113741.1.13.1), \
               ObjectIdentifier(1.2.840.113741.1.13.1.4)] is missing"
                    .to_owned()
            ],
            None
        ),
        "Intel extension path [1.2.840.113741.1.13.1, 1.2.840.113741.1.13.1.4] is missing"
    );
    let errors = [
        crl,
        webpki::Error::CertExpired {
            time: at(2_000_000_000),
            not_after: at(1_900_000_000),
        },
        webpki::Error::CertNotValidYet {
            time: at(1_000_000_000),
            not_before: at(1_100_000_000),
        },
        webpki::Error::InvalidCrlSignatureForPublicKey,
        webpki::Error::MaximumPathDepthExceeded,
        webpki::Error::TrailingData(webpki::DerTypeId::Certificate),
        webpki::Error::UnknownIssuer,
    ];
    for e in &errors {
        let text = webpki_error_text(e);
        assert_ne!(text, format!("{e:?}"));
        assert!(!text.contains(['{', '_']), "{text}");
        assert!(!text.contains("UnixTime"), "{text}");
    }
    assert_eq!(
        webpki_error_text(&webpki::Error::MaximumPathDepthExceeded),
        "maximum path depth exceeded"
    );
    assert_eq!(
        webpki_error_text(&webpki::Error::TrailingData(webpki::DerTypeId::Certificate)),
        "trailing data"
    );
}
