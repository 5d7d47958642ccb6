//! The emulated key hierarchy: its storage, its certificates read by the verifier's
//! own code, and reports it signs, which verify only when emulated evidence is
//! accepted (docs/threat-model.md, assumption 5).

use super::fixture::{keys, scratch, signed_report, TEST_RSA_BITS};
use super::*;
use nacre_shared_abi::snp::report::AttestationReport;
use nacre_verifier::crl::Crl;
use nacre_verifier::snp::{check, verify_report, SnpChain};
use nacre_verifier::test_vectors::read;
use nacre_verifier::{self, Evidence, Expectations, Inputs, Trust, TrustAnchors, Verification};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const REPORT_DATA: [u8; 64] = [0xc3; 64];

fn built_in() -> TrustAnchors {
    TrustAnchors::built_in().expect("built-in roots")
}

fn verify_with(
    report: &[u8; ATTESTATION_REPORT_SIZE],
    keys: &EmulatedSnpKeys,
    chain: Option<&SnpChain>,
    roots: &TrustAnchors,
) -> Verification {
    let report = AttestationReport::from_bytes(report).expect("a valid report");
    verify_report(
        &report,
        keys.vcek(),
        chain,
        None,
        roots,
        &Expectations {
            measurement: Some(MEASUREMENT.to_vec()),
            report_data: Some(REPORT_DATA.to_vec()),
            allow_debug: false,
            policy: None,
            reference: None,
        },
        SystemTime::now(),
    )
    .expect("verification runs")
}

/// AMD's Milan report and the VCEK that signed it (`tests/vectors/virtee-sev`).
fn amd_milan() -> (AttestationReport, Cert) {
    let report = nacre_verifier::decode_hex(&read("virtee-sev", "report_milan.hex")).expect("hex");
    let vcek = Cert::from_der_or_pem(&read("virtee-sev", "vcek_milan.der")).expect("VCEK");
    (
        AttestationReport::from_bytes(&report).expect("report"),
        vcek,
    )
}

fn failed_detail<'a>(v: &'a Verification, name: &str) -> &'a str {
    let c = v.check(name).unwrap_or_else(|| panic!("no check {name}"));
    assert!(!c.passed, "{name} passed: {}", c.detail);
    assert!(!v.passed());
    &c.detail
}

fn assert_same(a: &EmulatedSnpKeys, b: &EmulatedSnpKeys) {
    assert_eq!(a.ark, b.ark);
    assert_eq!(a.ask, b.ask);
    assert_eq!(a.vcek, b.vcek);
    assert_eq!(a.chip_id, b.chip_id);
    assert_eq!(a.tcb, b.tcb);
    assert!(a.ark_key == b.ark_key && a.ask_key == b.ask_key);
    assert_eq!(a.vcek_key.to_bytes(), b.vcek_key.to_bytes());
}

#[test]
fn the_key_directory_follows_the_environment() {
    let env = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        dir_from_env(move |name| map.get(name).cloned())
    };
    let all = [
        (KEYS_DIR_ENV, "/keys"),
        ("XDG_DATA_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(env(&all).ok(), Some(PathBuf::from("/keys")));
    assert_eq!(
        env(&all[1..]).ok(),
        Some(PathBuf::from("/xdg/nacre/emulated-keys"))
    );
    assert_eq!(
        env(&all[2..]).ok(),
        Some(PathBuf::from("/home/u/.local/share/nacre/emulated-keys"))
    );
    // Empty values are unset; a relative XDG_DATA_HOME is ignored.
    assert_eq!(
        env(&[(KEYS_DIR_ENV, ""), ("XDG_DATA_HOME", "rel"), ("HOME", "/h")]).ok(),
        Some(PathBuf::from("/h/.local/share/nacre/emulated-keys"))
    );
    assert!(matches!(env(&[]), Err(EmulatedKeysError::NoDirectory)));
}

#[test]
fn a_hierarchy_round_trips_through_load_or_create() {
    let base = scratch("round-trip");
    let dir = base.join("emulated-snp");
    let made = EmulatedSnpKeys::load_or_create_with(&dir, TEST_RSA_BITS).expect("made");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for file in files::ALL {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let key = fs::read_to_string(dir.join(files::VCEK_KEY)).expect("the VCEK's key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    let ark_key = fs::read_to_string(dir.join(files::ARK_KEY)).expect("the ARK's key");
    assert!(ark_key.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Nothing but the set is left beside it.
    let beside: Vec<_> = fs::read_dir(&base)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(beside, [OsString::from("emulated-snp")]);

    let again = EmulatedSnpKeys::load_or_create_with(&dir, TEST_RSA_BITS).expect("loaded");
    assert_same(&made, &again);
    assert_same(&made, &EmulatedSnpKeys::load(&dir).expect("loaded"));
    let root = load_root(&dir).expect("the root");
    assert_eq!((root.ark, root.ask), (made.ark.clone(), made.ask.clone()));

    // An empty directory (made by the user) is filled.
    let empty = base.join("empty");
    fs::create_dir(&empty).expect("mkdir");
    EmulatedSnpKeys::load_or_create_with(&empty, TEST_RSA_BITS).expect("made in an empty dir");
    assert!(EmulatedSnpKeys::load(&empty).is_ok());
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn corrupt_or_partial_directories_are_errors_and_are_left_alone() {
    let base = scratch("corrupt");
    let good = base.join("good");
    fs::create_dir(&good).expect("mkdir");
    keys().write_files(&good).expect("write the set");
    assert!(EmulatedSnpKeys::load(&good).is_ok());

    // A copy of the set with `edit` applied; load_or_create must refuse it and
    // leave it as it was.
    let case = |name: &str, edit: &dyn Fn(&Path)| {
        let dir = base.join(name);
        fs::create_dir(&dir).expect("mkdir");
        for file in files::ALL {
            fs::copy(good.join(file), dir.join(file)).expect("copy");
        }
        edit(&dir);
        let before: Vec<_> = files::ALL
            .iter()
            .map(|f| fs::read(dir.join(f)).ok())
            .collect();
        let err = EmulatedSnpKeys::load_or_create_with(&dir, TEST_RSA_BITS)
            .expect_err("a damaged set is refused");
        let after: Vec<_> = files::ALL
            .iter()
            .map(|f| fs::read(dir.join(f)).ok())
            .collect();
        assert_eq!(before, after, "{name}: the directory was changed");
        err
    };
    let replace = |file: &'static str, text: String| {
        move |dir: &Path| fs::write(dir.join(file), &text).expect("write")
    };

    let err = case("missing", &|dir| {
        fs::remove_file(dir.join(files::ASK_KEY)).expect("rm")
    });
    assert!(
        matches!(&err, EmulatedKeysError::Incomplete { missing, .. } if missing == &[files::ASK_KEY]),
        "{err}"
    );
    assert!(err.to_string().contains("ask-key.pem missing"), "{err}");

    let err = case("truncated", &|dir| {
        let text = fs::read_to_string(dir.join(files::VCEK_KEY)).expect("read");
        fs::write(dir.join(files::VCEK_KEY), &text[..text.len() / 2]).expect("write")
    });
    assert!(
        matches!(
            err,
            EmulatedKeysError::Corrupt {
                file: files::VCEK_KEY,
                ..
            }
        ),
        "{err}"
    );

    let ask_key = fs::read_to_string(good.join(files::ASK_KEY)).expect("read");
    let err = case("swapped", &replace(files::ARK_KEY, ask_key));
    assert!(
        matches!(&err, EmulatedKeysError::Corrupt { file: files::ARK_KEY, reason, .. }
            if reason.contains("not the certificate's")),
        "{err}"
    );

    let err = case("chip-id", &replace(files::CHIP_ID, hex::encode([7u8; 64])));
    assert!(
        matches!(
            err,
            EmulatedKeysError::Corrupt {
                file: files::CHIP_ID,
                ..
            }
        ),
        "{err}"
    );
    let err = case(
        "short-chip-id",
        &replace(files::CHIP_ID, hex::encode([7u8; 8])),
    );
    assert!(
        matches!(
            err,
            EmulatedKeysError::Corrupt {
                file: files::CHIP_ID,
                ..
            }
        ),
        "{err}"
    );

    // AMD's Milan ARK is not the emulated one.
    let amd_ark = String::from_utf8(read("virtee-sev", "milan_ark.pem")).expect("PEM");
    let err = case("amd-ark", &replace(files::ARK_CERT, amd_ark));
    assert!(
        matches!(
            err,
            EmulatedKeysError::Corrupt {
                file: files::ARK_KEY | files::ARK_CERT,
                ..
            }
        ),
        "{err}"
    );

    let err = case("garbage-cert", &replace(files::VCEK_CERT, "hello\n".into()));
    assert!(
        matches!(
            err,
            EmulatedKeysError::Corrupt {
                file: files::VCEK_CERT,
                ..
            }
        ),
        "{err}"
    );

    // A directory of something else entirely is not taken over.
    let other = base.join("other");
    fs::create_dir(&other).expect("mkdir");
    fs::write(other.join("notes.txt"), "mine").expect("write");
    let err = EmulatedKeysError::to_string(
        &EmulatedSnpKeys::load_or_create_with(&other, TEST_RSA_BITS).expect_err("refused"),
    );
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(
        fs::read_dir(&other).expect("list").count(),
        1,
        "nothing was added"
    );
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn concurrent_first_use_yields_one_set() {
    let base = scratch("concurrent");
    let dir = base.join("emulated-snp");
    let made: Vec<EmulatedSnpKeys> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| EmulatedSnpKeys::load_or_create_with(&dir, TEST_RSA_BITS)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("no panic").expect("keys"))
            .collect()
    });
    assert_same(&made[0], &made[1]);
    assert_same(&made[0], &EmulatedSnpKeys::load(&dir).expect("loaded"));
    assert_eq!(
        fs::read_dir(&base).expect("list").count(),
        1,
        "a temporary set was left"
    );
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn the_verifier_reads_no_keys_and_creates_nothing() {
    let base = scratch("read-only");
    let missing = base.join("absent");
    assert!(matches!(
        load_root(&missing),
        Err(EmulatedKeysError::NotFound { .. })
    ));
    assert!(!missing.exists(), "load_root created the directory");
    // The certificates are all a verifier needs.
    let certs = base.join("certs");
    fs::create_dir(&certs).expect("mkdir");
    fs::write(certs.join(files::ARK_CERT), pem(&keys().ark)).expect("write");
    assert!(matches!(
        load_root(&certs),
        Err(EmulatedKeysError::Incomplete { .. })
    ));
    fs::write(certs.join(files::ASK_CERT), pem(&keys().ask)).expect("write");
    let root = load_root(&certs).expect("the root from the certificates alone");
    assert_eq!(root.product, SnpProduct::Milan);
    assert_eq!(root.ark.subject_name(), ARK_COMMON_NAME);
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn the_chain_verifies_with_the_verifiers_own_checks() {
    let k = keys();
    assert_eq!(k.ark.subject_name(), ARK_COMMON_NAME);
    assert_eq!(k.ask.subject_name(), ASK_COMMON_NAME);
    assert_eq!(k.vcek.subject_name(), VCEK_COMMON_NAME);
    assert_eq!(k.ask.issuer_name(), ARK_COMMON_NAME);
    assert_eq!(k.vcek.issuer_name(), ASK_COMMON_NAME);
    for cert in [&k.ark, &k.ask, &k.vcek] {
        assert!(is_emulated(cert), "{}", cert.subject_name());
        let text = cert.certificate().tbs_certificate.subject.to_string();
        assert!(text.contains(EMULATED_ORGANIZATION), "{text}");
        assert!(cert.valid_at(SystemTime::now()).is_ok());
    }
    k.ark
        .verify_issued_by(&k.ark)
        .expect("the ARK signs itself");
    k.ask
        .verify_issued_by(&k.ark)
        .expect("the ARK signs the ASK");
    k.vcek
        .verify_issued_by(&k.ask)
        .expect("the ASK signs the VCEK");
    assert!(k.ark.is_ca() && k.ask.is_ca() && !k.vcek.is_ca());
    assert!(k.vcek.p384_key().is_ok());

    // The chain as evidence carries it decodes the way AMD's does.
    let chain = SnpChain::from_pem(k.cert_chain_pem().as_bytes()).expect("ASK then ARK");
    assert_eq!((&chain.ask, &chain.ark), (&k.ask, &k.ark));
    assert_eq!(
        Cert::from_der_or_pem(k.vcek_der()).expect("DER VCEK"),
        k.vcek
    );

    // Neither hierarchy signs the other's certificates, nor do two emulated ones.
    let amd = built_in();
    let amd = amd.amd(SnpProduct::Milan).expect("AMD's Milan root");
    assert!(k.vcek.verify_issued_by(&amd.ask).is_err());
    assert!(k.ask.verify_issued_by(&amd.ark).is_err());
    let amd_vcek = Cert::from_der_or_pem(&read("virtee-sev", "vcek_milan.der")).expect("VCEK");
    assert!(amd_vcek.verify_issued_by(&k.ask).is_err());
    assert!(!is_emulated(&amd_vcek) && !is_emulated(&amd.ark));
    let other = EmulatedSnpKeys::generate_with(TEST_RSA_BITS).expect("another set");
    assert!(other.vcek.verify_signature_by(&k.ask).is_err());
    assert_ne!(other.chip_id, k.chip_id);
}

#[test]
fn the_vcek_extensions_decode_to_the_emulated_tcb_and_chip_id() {
    let k = keys();
    assert_eq!(EMULATED_TCB.to_le_bytes(), [4, 1, 0, 0, 0, 0, 22, 213]);
    assert_eq!(k.tcb(), EMULATED_TCB);
    assert_eq!(vcek_product(&k.vcek).ok(), Some(SnpProduct::Milan));
    let product = k
        .vcek
        .extension(vcek_oid::PRODUCT_NAME)
        .expect("productName");
    assert_eq!(
        Ia5StringRef::from_der(product).map(|s| s.to_string()).ok(),
        Some(PRODUCT_NAME.to_owned())
    );
    assert_eq!(
        VcekTcb::of(&k.vcek),
        VcekTcb {
            bootloader: Some(4),
            tee: Some(1),
            snp: Some(22),
            microcode: Some(213),
            fmc: None
        }
    );
    // Microcode 213 needs a leading zero byte to stay a positive INTEGER.
    assert_eq!(
        k.vcek.extension(vcek_oid::UCODE_SPL),
        Some(&[2, 2, 0, 213][..])
    );
    for oid in vcek_oid::SPL_4_TO_7 {
        assert_eq!(k.vcek.extension(oid), Some(&[2, 1, 0][..]));
    }
    assert_eq!(
        vcek_hw_id(&k.vcek, SnpProduct::Milan).as_deref(),
        Some(&k.chip_id()[..])
    );
    // The raw 64 bytes, as AMD's Milan VCEKs carry them.
    assert_eq!(k.vcek.extension(vcek_oid::HW_ID), Some(&k.chip_id()[..]));
}

#[test]
fn a_signed_report_verifies_only_when_emulated_evidence_is_accepted() {
    let k = keys();
    let report = signed_report(k, MEASUREMENT, REPORT_DATA);
    let r = AttestationReport::from_bytes(&report).expect("a report");
    assert!(r.signature.r_big_endian().is_some() && r.signature.s_big_endian().is_some());
    assert!(report[SIGNED_SIZE + 2 * ECDSA_P384_COMPONENT_SIZE..]
        .iter()
        .all(|&b| b == 0));

    // Roots that know nothing of the emulated processor: checked as AMD's, refused.
    let v = verify_with(&report, k, None, &built_in());
    assert_eq!(v.trust, Trust::Hardware);
    assert!(!v.passed());
    assert!(v.failures().any(|c| c.name == check::VCEK_SIGNED_BY_ASK));

    // Recognized without the opt-in: refused, by name, as emulated.
    let hardware_only = built_in().recognize_snp(verifier_root(None).expect("no directory"));
    for chain in [None, Some(k.root())] {
        let chain = chain.map(|root| SnpChain {
            ask: root.ask,
            ark: root.ark,
        });
        let v = verify_with(&report, k, chain.as_ref(), &hardware_only);
        assert_eq!(v.trust, Trust::Emulated);
        assert_eq!(failed_detail(&v, check::ARK_TRUSTED), REFUSED);
        assert_eq!(v.to_json()["verified"], false);
        assert_eq!(v.to_json()["trust"], "emulated");
    }

    // With it: every check passes, and the verdict says it is emulated.
    let accepting = built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(k.root()));
    let v = verify_with(&report, k, None, &accepting);
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert_eq!(v.trust, Trust::Emulated);
    let ark = v.check(check::ARK_TRUSTED).expect("ark-trusted");
    assert!(ark.detail.contains(ARK_COMMON_NAME), "{}", ark.detail);
    assert!(
        ark.detail.contains("emulated security processor"),
        "{}",
        ark.detail
    );
    assert!(v.claim("trust").is_some_and(|t| t.starts_with("emulated")));
    let json = v.to_json();
    assert_eq!(json["verified"], true);
    assert_eq!(json["trust"], "emulated");
    assert_eq!(json["claims"]["measurement"], hex::encode(MEASUREMENT));
    assert_eq!(json["claims"]["report_data"], hex::encode(REPORT_DATA));
    let chain = SnpChain::from_pem(k.cert_chain_pem().as_bytes()).expect("chain");
    assert!(verify_with(&report, k, Some(&chain), &accepting).passed());

    // Through the evidence detection and the public entry point.
    let evidence = Evidence::parse(&report).expect("an SNP report");
    let mut inputs = Inputs::new(&accepting);
    inputs.vcek = Some(k.vcek().clone());
    let v = nacre_verifier::verify(&evidence, &inputs).expect("runs");
    assert!(v.passed() && v.trust == Trust::Emulated);

    // Another host's emulated keys are not trusted in place of these.
    let other = EmulatedSnpKeys::generate_with(TEST_RSA_BITS).expect("another set");
    let other_chain = SnpChain::from_pem(other.cert_chain_pem().as_bytes()).expect("chain");
    let v = verify_with(&report, k, Some(&other_chain), &accepting);
    failed_detail(&v, check::ARK_TRUSTED);
    let v = verify_with(&report, &other, None, &accepting);
    failed_detail(&v, check::VCEK_SIGNED_BY_ASK);
    failed_detail(&v, check::REPORT_SIGNATURE);

    // Hardware evidence stays hardware evidence with the opt-in.
    let (amd_report, amd_vcek) = amd_milan();
    let v = verify_report(
        &amd_report,
        &amd_vcek,
        None,
        None,
        &accepting,
        &Expectations::default(),
        nacre_verifier::test_vectors::middle_of(&amd_vcek),
    )
    .expect("runs");
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert_eq!(v.trust, Trust::Hardware);
    assert_eq!(v.to_json()["trust"], "hardware");
}

#[test]
fn a_flipped_bit_of_the_signed_part_fails() {
    let k = keys();
    let accepting = built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(k.root()));
    let report = signed_report(k, MEASUREMENT, REPORT_DATA);
    // One bit of every byte of the signed part, then bits of R and S.
    let bits = (0..SIGNED_SIZE).map(|byte| byte * 8 + byte % 8).chain([
        SIGNED_SIZE * 8,
        (SIGNED_SIZE + ECDSA_P384_COMPONENT_SIZE) * 8 + 9,
    ]);
    for bit in bits {
        let mut flipped = report;
        flipped[bit / 8] ^= 1 << (bit % 8);
        let Ok(r) = AttestationReport::from_bytes(&flipped) else {
            assert!(
                bit < 32,
                "bit {bit}: only the version makes a report unusable"
            );
            continue;
        };
        let v = verify_report(
            &r,
            k.vcek(),
            None,
            None,
            &accepting,
            &Expectations::default(),
            SystemTime::now(),
        )
        .expect("runs");
        failed_detail(&v, check::REPORT_SIGNATURE);
    }
}

#[test]
fn the_product_hierarchy_has_rsa_4096_roots() {
    let start = Instant::now();
    let k = EmulatedSnpKeys::generate().expect("the product's keys");
    eprintln!(
        "an RSA-{RSA_KEY_BITS} emulated hierarchy took {:.1} s to make",
        start.elapsed().as_secs_f64()
    );
    use rsa::traits::PublicKeyParts;
    assert_eq!(k.ark_key.size() * 8, RSA_KEY_BITS);
    assert_eq!(k.ask_key.size() * 8, RSA_KEY_BITS);
    let report = signed_report(&k, MEASUREMENT, REPORT_DATA);
    assert!(verify_with(
        &report,
        &k,
        None,
        &built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(k.root()))
    )
    .passed());
}

fn verify_with_crl(
    report: &[u8; ATTESTATION_REPORT_SIZE],
    keys: &EmulatedSnpKeys,
    crl: &Crl,
    at: SystemTime,
) -> Verification {
    verify_report(
        &AttestationReport::from_bytes(report).expect("a valid report"),
        keys.vcek(),
        None,
        Some(crl),
        &built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(keys.root())),
        &Expectations::default(),
        at,
    )
    .expect("verification runs")
}

#[test]
fn the_emulated_arks_crl_is_checked_like_amds() {
    let k = keys();
    let report = signed_report(k, MEASUREMENT, REPORT_DATA);
    let now = SystemTime::now();
    let crl = k.crl(now).expect("a CRL");
    let v = verify_with_crl(&report, k, &crl, now);
    let c = v.check(check::ASK_NOT_REVOKED).expect("the check runs");
    assert!(
        c.passed && c.detail.contains("does not list the ASK"),
        "{}",
        c.detail
    );
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // DER and PEM round trips.
    assert_eq!(Crl::from_der_or_pem(crl.der()).expect("DER"), crl);
    assert_eq!(
        Crl::from_der_or_pem(crl.pem().as_bytes()).expect("PEM"),
        crl
    );
    assert_eq!(crl.issuer_name(), ARK_COMMON_NAME);
    assert!(Crl::from_der_or_pem(b"garbage").is_err());
    assert!(Crl::from_der_or_pem(k.vcek_pem().as_bytes()).is_err());

    // A revoked ASK fails, by name.
    let revoking = k.crl_revoking(now, &[&k.ask]).expect("a CRL");
    let v = verify_with_crl(&report, k, &revoking, now);
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("revokes the ASK"));
    // Revoking something else does not touch the ASK.
    let other_serial = k.crl_revoking(now, &[&k.vcek]).expect("a CRL");
    assert!(verify_with_crl(&report, k, &other_serial, now).passed());

    // Out of date, or from after the verification time.
    let day = Duration::from_secs(24 * 3600);
    let v = verify_with_crl(&report, k, &crl, now + 8 * day);
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("out of date"));
    let v = verify_with_crl(&report, k, &crl, now - day);
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("after the verification time"));

    // Another ARK's CRL, and a CRL whose signature was changed.
    let other = EmulatedSnpKeys::generate_with(TEST_RSA_BITS).expect("another set");
    let v = verify_with_crl(&report, k, &other.crl(now).expect("a CRL"), now);
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("not the ARK's"));
    let mut der = crl.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let v = verify_with_crl(&report, k, &Crl::from_der(&der).expect("decodes"), now);
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("does not verify"));

    // The emulated ARK's CRL says nothing about AMD's chain: AMD's report fails the
    // check, by the CRL's issuer.
    let (amd_report, amd_vcek) = amd_milan();
    let v = verify_report(
        &amd_report,
        &amd_vcek,
        None,
        Some(&crl),
        &built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(k.root())),
        &Expectations::default(),
        nacre_verifier::test_vectors::middle_of(&amd_vcek),
    )
    .expect("runs");
    assert!(failed_detail(&v, check::ASK_NOT_REVOKED).contains("ARK-Milan-emulated"));

    // A CRL is for SNP reports only.
    let quote = read("go-tdx-guest", "tdx_prod_quote_SPR_E4.dat");
    let roots = built_in();
    let mut inputs = Inputs::new(&roots);
    inputs.crl = Some(crl);
    assert!(matches!(
        nacre_verifier::verify(&Evidence::parse(&quote).expect("a quote"), &inputs),
        Err(nacre_verifier::AttestError::Inputs(_))
    ));
}

#[test]
fn crls_that_are_not_whole_v2_lists_are_refused() {
    use x509_cert::crl::CertificateList;
    let k = keys();
    let crl = k
        .crl_revoking(SystemTime::now(), &[&k.vcek])
        .expect("a CRL");
    let list = CertificateList::from_der(crl.der()).expect("decodes");
    let refused = |edit: &dyn Fn(&mut CertificateList), why: &str| {
        let mut l = list.clone();
        edit(&mut l);
        let e = Crl::from_der(&l.to_der().expect("encodes")).expect_err(why);
        assert!(e.to_string().contains(why), "{e}");
    };
    refused(&|l| l.tbs_cert_list.version = Version::V1, "not version 2");
    refused(&|l| l.tbs_cert_list.next_update = None, "no next update");
    refused(
        &|l| l.signature_algorithm.parameters = None,
        "signature algorithms differ",
    );
    refused(
        &|l| {
            if let Some(e) = l.tbs_cert_list.crl_extensions.as_mut() {
                e[0].critical = true;
            }
        },
        "critical CRL extension",
    );
    refused(
        &|l| {
            if let Some(r) = l.tbs_cert_list.revoked_certificates.as_mut() {
                r[0].crl_entry_extensions = Some(vec![Extension {
                    extn_id: x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.29.29"),
                    critical: true,
                    extn_value: OctetString::new(vec![0x30, 0]).expect("octets"),
                }]);
            }
        },
        "critical CRL entry extension",
    );
    // The unedited list decodes.
    assert_eq!(
        Crl::from_der(&list.to_der().expect("encodes")).expect("decodes"),
        crl
    );
}

#[test]
fn the_policy_must_be_the_one_the_image_declares() {
    let k = keys();
    let report = signed_report(k, MEASUREMENT, REPORT_DATA);
    let launched = AttestationReport::from_bytes(&report)
        .expect("a report")
        .guest_policy()
        .0;
    let verify_declaring = |declared: u64| {
        verify_report(
            &AttestationReport::from_bytes(&report).expect("a report"),
            k.vcek(),
            None,
            None,
            &built_in().recognize_snp(crate::emulated::snp::keys::trusted_root(k.root())),
            &Expectations {
                policy: Some(declared),
                ..Expectations::default()
            },
            SystemTime::now(),
        )
        .expect("runs")
    };
    let v = verify_declaring(launched);
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert!(v.check(check::POLICY).is_some());
    // Any other policy (here: SINGLE_SOCKET added) fails, by name.
    let v = verify_declaring(launched | 1 << 20);
    let failures: Vec<&str> = v.failures().map(|c| c.name).collect();
    assert_eq!(failures, [check::POLICY]);
    assert!(failed_detail(&v, check::POLICY).contains("the image declares policy"));
}

#[test]
fn damaged_crls_never_panic_and_never_clear_a_revoked_ask() {
    let k = keys();
    let report = signed_report(k, MEASUREMENT, REPORT_DATA);
    let now = SystemTime::now();
    let crl = k.crl_revoking(now, &[&k.ask]).expect("a CRL");
    let der = crl.der().to_vec();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 256,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&(0..der.len() * 8), |bit| {
            let mut damaged = der.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            if let Ok(crl) = Crl::from_der(&damaged) {
                // The list revokes the ASK: a damaged copy that decodes must still fail
                // the check (by its signature, or by revoking), never pass it.
                let v = verify_with_crl(&report, k, &crl, now);
                let c = v.check(check::ASK_NOT_REVOKED).expect("checked");
                proptest::prop_assert!(!c.passed, "bit {}: {}", bit, c.detail);
            }
            Ok(())
        })
        .expect("no damaged CRL clears the ASK");
}
