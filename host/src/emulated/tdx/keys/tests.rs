//! The emulated TDX attestation path end to end: TDREPORTs from the emulated TDX
//! module, quotes from the emulated QE, checked by the verifier of `attest::tdx`.

use super::*;
use crate::emulated::tdx::module::{
    emulated_tee_tcb_info, sha384, TdxReportKey, EMULATED_TEE_TCB_SVN,
};
use crate::emulated::tdx::quoting::{QuoteError, QuotingEnclave, EMULATED_QE_ISVSVN, QE_AUTH_DATA};
use nacre_shared_abi::tdx::attributes;
use nacre_shared_abi::tdx_report::{TdInfo, TdReport, TeeTcbInfo, TDREPORT_SIZE};
use nacre_verifier::tdx::{self, check, verify_quote, Quote};
use nacre_verifier::tdx::{INTEL_TD_QE_ISVPRODID, TEE_TYPE_TDX};
use nacre_verifier::{Expectations, TrustAnchors, Verification};
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use zerocopy::FromBytes;
use zerocopy::FromZeros;

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "nacre-emulated-tdx-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// A path inside that does not exist yet.
    fn keys(&self) -> PathBuf {
        self.0.join("keys")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const MRTD: [u8; 48] = [0x6d; 48];
const REPORT_DATA: [u8; 64] = {
    let mut data = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        data[i] = (i as u8).wrapping_mul(37) ^ 0x5a;
        i += 1;
    }
    data
};

fn td_info() -> TdInfo {
    let mut td = TdInfo::new_zeroed();
    td.attributes = attributes::SEPT_VE_DISABLE;
    td.xfam = 0x0006_1ae7;
    td.mr_td = MRTD;
    td.mr_config_id = [0x11; 48];
    td.mr_owner = [0x22; 48];
    td.mr_owner_config = [0x33; 48];
    td.rtmr = [[0x40; 48], [0x41; 48], [0x42; 48], [0x43; 48]];
    td
}

/// A hierarchy in a temporary directory, a report key and a QE.
struct Fixture {
    tmp: TempDir,
    keys: EmulatedTdxKeys,
    report_key: TdxReportKey,
    qe: QuotingEnclave,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let tmp = TempDir::new(tag);
        let keys = EmulatedTdxKeys::load_or_create(&tmp.keys()).expect("create the keys");
        Self {
            tmp,
            keys,
            report_key: TdxReportKey::generate().expect("a report key"),
            qe: QuotingEnclave::new(),
        }
    }

    fn td_report(&self) -> [u8; TDREPORT_SIZE] {
        self.report_key
            .td_report(&td_info(), &emulated_tee_tcb_info(), &REPORT_DATA)
    }

    fn quote(&self) -> Vec<u8> {
        self.qe
            .quote(&self.keys, &self.report_key, &self.td_report())
            .expect("the QE quotes its own platform's report")
    }

    /// A quote of a TD whose attributes are `attributes`.
    fn quote_with_attributes(&self, attributes: u64) -> Vec<u8> {
        let mut td = td_info();
        td.attributes = attributes;
        let report = self
            .report_key
            .td_report(&td, &emulated_tee_tcb_info(), &REPORT_DATA);
        self.qe
            .quote(&self.keys, &self.report_key, &report)
            .expect("the QE quotes its own platform's report")
    }

    /// The built-in roots, and this host's emulated TDX root as allowed.
    fn roots(&self) -> TrustAnchors {
        TrustAnchors::built_in()
            .expect("built-in roots")
            .recognize_tdx(crate::emulated::tdx::keys::trusted_root(
                self.keys.root_cert(),
            ))
    }
}

fn expect_td() -> Expectations {
    Expectations {
        measurement: Some(MRTD.to_vec()),
        report_data: Some(REPORT_DATA.to_vec()),
        allow_debug: false,
        policy: None,
        reference: None,
    }
}

fn verify(bytes: &[u8], roots: &TrustAnchors) -> Result<Verification, tdx::TdxError> {
    verify_quote(
        &Quote::parse(bytes)?,
        roots,
        &expect_td(),
        SystemTime::now(),
        None,
    )
}

fn failed(v: &Verification, name: &str) -> bool {
    !v.check(name)
        .unwrap_or_else(|| panic!("no check {name}: {v:#?}"))
        .passed
}

/// Every check of a verification with expectations and no collateral.
fn all_checks() -> impl Iterator<Item = &'static str> {
    check::ALWAYS
        .into_iter()
        .chain([check::MRTD, check::REPORT_DATA])
}

#[test]
fn emulated_quote_verifies_against_the_emulated_root() {
    let f = Fixture::new("verifies");
    let bytes = f.quote();
    let v = verify(&bytes, &f.roots()).expect("the verification runs");
    for name in all_checks() {
        let c = v
            .check(name)
            .unwrap_or_else(|| panic!("no check {name}: {v:#?}"));
        assert!(c.passed, "{name}: {}", c.detail);
    }
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // The quote carries the report's fields where docs/specs.md 6.6 puts them.
    assert_eq!(&bytes[0xB8..0xE8], &MRTD[..]);
    assert_eq!(&bytes[0x238..0x278], &REPORT_DATA[..]);
    let q = Quote::parse(&bytes).expect("parses");
    assert_eq!(q.version, 4);
    assert_eq!(q.trailing, 0);
    assert_eq!(q.td_attributes(), attributes::SEPT_VE_DISABLE);
    assert_eq!(q.body.xfam, 0x0006_1ae7u64.to_le_bytes());
    assert_eq!(q.body.rtmr[3], [0x43; 48]);
    assert_eq!(q.body.mr_owner, [0x22; 48]);
    assert_eq!(q.body.mr_seam, emulated_tee_tcb_info().mr_seam);
    assert_eq!(q.body.tee_tcb_svn, EMULATED_TEE_TCB_SVN);
    assert_eq!(q.attestation_key, f.keys.attestation_public_key());
    assert_eq!(q.qe_report.cpu_svn, EMULATED_CPUSVN);
    assert_eq!(q.qe_report.isv_svn, EMULATED_QE_ISVSVN);
    assert_eq!(q.qe_auth_data, QE_AUTH_DATA);
    assert_eq!(q.pck_chain_pem, f.keys.pck_chain_pem());
    let chain = q.pck_chain().expect("the chain decodes");
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0].subject_name(), PCK_NAME);
    assert_eq!(chain[1].subject_name(), PCK_CA_NAME);
    assert_eq!(chain[2], f.keys.root_cert());

    // dcap-qvl reads the same quote.
    let parsed = dcap_qvl::quote::Quote::parse(&bytes).expect("dcap-qvl parses the quote");
    assert_eq!(parsed.header.version, 4);
    assert_eq!(parsed.header.tee_type, TEE_TYPE_TDX);
}

#[test]
fn a_debuggable_td_needs_allow_debug() {
    let f = Fixture::new("debug");
    let bytes = f.quote_with_attributes(td_info().attributes | attributes::DEBUG);
    let v = verify(&bytes, &f.roots()).expect("runs");
    assert!(failed(&v, check::TD_DEBUG));
    let allowed = Expectations {
        allow_debug: true,
        ..expect_td()
    };
    let v = verify_quote(
        &Quote::parse(&bytes).expect("parses"),
        &f.roots(),
        &allowed,
        SystemTime::now(),
        None,
    )
    .expect("runs");
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
}

#[test]
fn expectations_of_another_td_fail() {
    let f = Fixture::new("expectations");
    let bytes = f.quote();
    let other = Expectations {
        measurement: Some(vec![0x6e; 48]),
        report_data: Some(b"another nonce".to_vec()),
        allow_debug: false,
        policy: None,
        reference: None,
    };
    let v = verify_quote(
        &Quote::parse(&bytes).expect("parses"),
        &f.roots(),
        &other,
        SystemTime::now(),
        None,
    )
    .expect("runs");
    assert!(failed(&v, check::MRTD));
    assert!(failed(&v, check::REPORT_DATA));
    assert!(!v.passed());
}

#[test]
fn pck_certificate_carries_intels_sgx_extension() {
    let f = Fixture::new("extension");
    let pck = f.keys.pck_cert();
    let ext = dcap_qvl::intel::parse_pck_extension(pck.der()).expect("dcap-qvl parses it");
    assert_eq!(ext.fmspc, EMULATED_FMSPC);
    assert_eq!(ext.cpu_svn, EMULATED_CPUSVN);
    assert_eq!(ext.pce_svn, EMULATED_PCESVN);
    assert_eq!(ext.pce_id, EMULATED_PCEID);
    assert_eq!(ext.sgx_type, u64::from(EMULATED_SGX_TYPE));
    assert_eq!(ext.ppid.len(), 16);
    assert_eq!(ext.platform_instance_id.as_ref().map(Vec::len), Some(16));
    assert_eq!(ext.dynamic_platform, Some(false));
    // The 16 SGX TCB components are the CPUSVN's bytes: each an entry
    // SEQUENCE { OID 1.2.840.113741.1.13.1.2.i, INTEGER } of the TCB sequence.
    for i in 1..=16u32 {
        let oid = sgx_oid::TCB.push_arc(i).expect("a component OID");
        let mut entry = oid.to_der().expect("encodes");
        entry.extend([0x02, 0x01, EMULATED_CPUSVN[i as usize - 1]]);
        assert!(
            ext.raw_extension.windows(entry.len()).any(|w| w == entry),
            "TCB component {i}"
        );
    }
    assert_eq!(
        dcap_qvl::intel::pck_ca(pck.der()).expect("an issuer"),
        dcap_qvl::config::PckCa::Platform
    );
    // Every subject says it is emulated, and the root is not Intel's.
    for cert in [&f.keys.root_cert(), f.keys.pck_ca_cert(), pck] {
        assert!(
            cert.subject_name().contains("emulated"),
            "{}",
            cert.subject_name()
        );
    }
    assert_ne!(
        f.keys.root_cert().spki_sha256().expect("a key"),
        nacre_verifier::roots::INTEL_SGX_ROOT_CA_SPKI_SHA256
    );
    assert!(!pck.is_ca());
    assert!(f.keys.pck_ca_cert().is_ca());
}

#[test]
fn built_in_intel_roots_refuse_an_emulated_quote() {
    let f = Fixture::new("intel-roots");
    let bytes = f.quote();
    // Roots that know nothing of the emulated platform: checked as Intel's, refused.
    let plain = TrustAnchors::built_in().expect("built-in roots");
    let v = verify(&bytes, &plain).expect("runs");
    assert!(failed(&v, check::CA_SIGNED_BY_ROOT) && failed(&v, check::ROOT_TRUSTED));
    assert_eq!(v.trust, nacre_verifier::Trust::Hardware);
    // Recognized, but not trusted: refused by name, as emulated.
    let roots = plain.recognize_tdx(verifier_root(None).expect("no directory"));
    let v = verify(&bytes, &roots).expect("runs");
    assert!(failed(&v, check::CA_SIGNED_BY_ROOT));
    assert!(failed(&v, check::ROOT_TRUSTED));
    assert!(!v.passed());
    assert_eq!(v.trust, nacre_verifier::Trust::Emulated);
    assert!(
        v.check(check::ROOT_TRUSTED)
            .is_some_and(|c| c.detail.contains("--allow-emulated")),
        "{v:#?}"
    );
    // Only the chain tells it apart: the signatures themselves are sound.
    for name in [
        check::QUOTE_SIGNATURE,
        check::QE_REPORT_SIGNATURE,
        check::QE_REPORT_DATA,
        check::PCK_SIGNED_BY_CA,
    ] {
        assert!(!failed(&v, name), "{name}");
    }
}

#[test]
fn another_hosts_root_refuses_the_quote() {
    let ours = Fixture::new("ours");
    let theirs = Fixture::new("theirs");
    let v = verify(&ours.quote(), &theirs.roots()).expect("runs");
    assert!(failed(&v, check::CA_SIGNED_BY_ROOT));
    assert!(failed(&v, check::ROOT_TRUSTED));
}

#[test]
fn flipped_bits_in_the_signed_part_fail_verification() {
    let f = Fixture::new("flips");
    let good = f.quote();
    let roots = f.roots();
    // Every field of the header and body (a stride through [0, 0x278)), then the
    // attestation key: the quote signature no longer verifies, or the quote no
    // longer parses (version, key type, TEE type).
    let key_at = 0x278 + 4 + 64;
    let offsets = (0..0x278).step_by(7).chain([0x277, key_at, key_at + 63]);
    for at in offsets {
        let mut bytes = good.clone();
        bytes[at] ^= 1 << (at % 8);
        match verify(&bytes, &roots) {
            Err(_) => assert!(
                at < 8,
                "byte {at:#x}: only the header's first fields refuse to parse"
            ),
            Ok(v) => assert!(failed(&v, check::QUOTE_SIGNATURE), "byte {at:#x}"),
        }
    }
    // The QE report: the PCK key's signature no longer verifies.
    let qe_report_at = 0x278 + 4 + 64 + 64 + 6;
    for at in [qe_report_at, qe_report_at + 0x80, qe_report_at + 0x140] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x80;
        let v = verify(&bytes, &roots).expect("runs");
        assert!(failed(&v, check::QE_REPORT_SIGNATURE), "byte {at:#x}");
        assert!(!v.passed());
    }
}

#[test]
fn td_report_is_filled_as_the_tdx_module_does() {
    let f = Fixture::new("report");
    // Reserved bytes of the inputs do not reach the report.
    let td = TdInfo::read_from_bytes(&[0xFF; 512][..]).expect("512 bytes");
    let tcb = TeeTcbInfo::read_from_bytes(&[0xEE; 239][..]).expect("239 bytes");
    let bytes = f.report_key.td_report(&td, &tcb, &REPORT_DATA);
    let report = TdReport::from_bytes(&bytes).expect("1024 bytes");
    assert_eq!(report.first_nonzero_reserved(), None);
    let mac = &report.report_mac;
    assert_eq!(mac.report_type.tee_type, 0x81);
    assert_eq!(mac.report_type.subtype, 0);
    assert_eq!(mac.cpu_svn, EMULATED_CPUSVN);
    assert_eq!(mac.report_data, REPORT_DATA);
    assert_eq!(mac.tee_tcb_info_hash, sha384(&bytes[0x100..0x1EF]));
    assert_eq!(mac.tee_info_hash, sha384(&bytes[0x200..0x400]));
    assert_eq!(&bytes[0x210..0x240], &[0xFF; 48][..]);
    assert_eq!(&bytes[0x118..0x148], &[0xEE; 48][..]);
    assert_ne!(mac.mac, [0; 32]);
    assert!(f.report_key.check(&bytes));
    // Another platform's key does not accept it.
    let other = TdxReportKey::generate().expect("a key");
    assert!(!other.check(&bytes));
    assert_eq!(
        f.qe.quote(&f.keys, &other, &bytes).err(),
        Some(QuoteError::Mac)
    );
    // The emulated module identifies as an Intel-signed TDX 1.0 module does.
    assert_eq!(
        emulated_tee_tcb_info().valid,
        [0xFF, 0x01, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn every_flipped_bit_of_a_td_report_is_refused() {
    let f = Fixture::new("report-flips");
    let good = f.td_report();
    assert!(f.report_key.check(&good));
    for bit in 0..TDREPORT_SIZE * 8 {
        let mut bytes = good;
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !f.report_key.check(&bytes),
            "bit {bit} of byte {:#x}",
            bit / 8
        );
        assert!(
            f.qe.quote(&f.keys, &f.report_key, &bytes).is_err(),
            "bit {bit}"
        );
    }
    // Wrong sizes are refused before anything else.
    for len in [0, 1023, 1025, 4096] {
        let bytes = vec![0u8; len];
        assert_eq!(
            f.qe.quote(&f.keys, &f.report_key, &bytes).err(),
            Some(QuoteError::ReportSize(len))
        );
    }
}

#[test]
fn arbitrary_td_reports_never_panic_the_qe() {
    let f = Fixture::new("proptest");
    let good = f.td_report();
    let mut runner = proptest::test_runner::TestRunner::default();
    let any_bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::collection::vec(any::<u8>(), TDREPORT_SIZE..=TDREPORT_SIZE),
    ];
    runner
        .run(&any_bytes, |bytes| {
            prop_assert!(f.qe.quote(&f.keys, &f.report_key, &bytes).is_err());
            Ok(())
        })
        .expect("no arbitrary bytes make a quote");
    let edits = proptest::collection::vec((0..TDREPORT_SIZE, 1..=255u8), 1..8);
    runner
        .run(&edits, |edits| {
            let mut bytes = good;
            for (at, xor) in edits {
                bytes[at] ^= xor;
            }
            let changed = bytes != good;
            let quoted = f.qe.quote(&f.keys, &f.report_key, &bytes);
            prop_assert_eq!(quoted.is_ok(), !changed);
            Ok(())
        })
        .expect("no edited report makes a quote");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn keys_persist_and_reload() {
    let f = Fixture::new("persist");
    let dir = f.tmp.keys();
    assert_eq!(f.keys.dir(), dir);
    assert_eq!(mode(&dir), 0o700);
    for file in [
        PCK_KEY_FILE,
        ATTESTATION_KEY_FILE,
        crate::emulated::tdx::collateral::TCB_SIGNING_KEY_FILE,
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut expected = [
        ROOT_CERT_FILE,
        PCK_CA_CERT_FILE,
        PCK_CERT_FILE,
        PCK_KEY_FILE,
        ATTESTATION_KEY_FILE,
        crate::emulated::tdx::collateral::TCB_SIGNING_CERT_FILE,
        crate::emulated::tdx::collateral::TCB_SIGNING_KEY_FILE,
        crate::emulated::tdx::collateral::ROOT_CRL_FILE,
        crate::emulated::tdx::collateral::PCK_CRL_FILE,
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);
    // No temporary directory is left next to it.
    let siblings = fs::read_dir(&f.tmp.0).expect("lists").count();
    assert_eq!(siblings, 1);

    let again = EmulatedTdxKeys::load_or_create(&dir).expect("loads");
    assert_eq!(again.root_cert(), f.keys.root_cert());
    assert_eq!(again.pck_chain_pem(), f.keys.pck_chain_pem());
    assert_eq!(
        again.attestation_public_key(),
        f.keys.attestation_public_key()
    );
    // A quote of the reloaded keys verifies against the root of the first load.
    let bytes =
        f.qe.quote(&again, &f.report_key, &f.td_report())
            .expect("quotes");
    let v = verify(&bytes, &f.roots()).expect("runs");
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert_eq!(
        EmulatedTdxKeys::load(&dir).expect("loads").root_cert(),
        f.keys.root_cert()
    );
}

#[test]
fn an_existing_empty_directory_is_filled() {
    let tmp = TempDir::new("empty");
    let dir = tmp.keys();
    fs::create_dir(&dir).expect("mkdir");
    let keys = EmulatedTdxKeys::load_or_create(&dir).expect("creates");
    assert!(dir.join(ROOT_CERT_FILE).is_file());
    assert_eq!(
        EmulatedTdxKeys::load(&dir).expect("loads").root_cert(),
        keys.root_cert()
    );
}

#[test]
fn concurrent_first_use_agrees_on_one_hierarchy() {
    let tmp = TempDir::new("race");
    let dir = tmp.keys();
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (dir, start) = (dir.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                EmulatedTdxKeys::load_or_create(&dir).map(|k| k.root_cert())
            })
        })
        .collect();
    let roots: Vec<Cert> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("no panic")
                .expect("every caller gets the keys")
        })
        .collect();
    assert!(roots.iter().all(|r| *r == roots[0]));
    assert_eq!(
        EmulatedTdxKeys::load(&dir).expect("loads").root_cert(),
        roots[0]
    );
    // The losers' temporary directories are gone.
    assert_eq!(fs::read_dir(&tmp.0).expect("lists").count(), 1);
}

#[test]
fn corrupt_or_partial_key_directories_are_errors() {
    let tmp = TempDir::new("corrupt");
    let dir = tmp.keys();
    EmulatedTdxKeys::load_or_create(&dir).expect("creates");
    let load = || EmulatedTdxKeys::load_or_create(&dir);
    let read = |file: &str| fs::read(dir.join(file)).expect("reads");
    let write = |file: &str, bytes: &[u8]| fs::write(dir.join(file), bytes).expect("writes");

    // A key file that is not a key.
    let pck_key = read(PCK_KEY_FILE);
    write(PCK_KEY_FILE, b"not a key\n");
    let err = load().expect_err("a corrupt key");
    assert!(
        matches!(&err, KeysError::Corrupt { path, .. } if path.ends_with(PCK_KEY_FILE)),
        "{err:?}"
    );
    assert!(err.to_string().contains(PCK_KEY_FILE), "{err}");
    // It is left as it was.
    assert_eq!(read(PCK_KEY_FILE), b"not a key\n");
    // A valid key that is not the certificate's.
    write(PCK_KEY_FILE, &read(ATTESTATION_KEY_FILE));
    let err = load().expect_err("a foreign key");
    assert!(
        matches!(&err, KeysError::Corrupt { path, reason } if path.ends_with(PCK_KEY_FILE) && reason.contains(PCK_CERT_FILE)),
        "{err:?}"
    );
    write(PCK_KEY_FILE, &pck_key);
    load().expect("whole again");

    // A truncated certificate.
    let root = read(ROOT_CERT_FILE);
    write(ROOT_CERT_FILE, &root[..root.len() / 2]);
    let err = load().expect_err("a truncated certificate");
    assert!(
        matches!(&err, KeysError::Corrupt { path, .. } if path.ends_with(ROOT_CERT_FILE)),
        "{err:?}"
    );
    // Another hierarchy's root: the CA no longer chains.
    let other = TempDir::new("corrupt-other");
    EmulatedTdxKeys::load_or_create(&other.keys()).expect("creates");
    write(
        ROOT_CERT_FILE,
        &fs::read(other.keys().join(ROOT_CERT_FILE)).expect("reads"),
    );
    let err = load().expect_err("a foreign root");
    assert!(
        matches!(&err, KeysError::Corrupt { path, .. } if path.ends_with(PCK_CA_CERT_FILE)),
        "{err:?}"
    );
    write(ROOT_CERT_FILE, &root);

    // A key that is not UTF-8.
    let attestation = read(ATTESTATION_KEY_FILE);
    write(ATTESTATION_KEY_FILE, &[0xFF, 0xFE, 0x00]);
    let err = load().expect_err("binary garbage");
    assert!(
        matches!(&err, KeysError::Corrupt { path, .. } if path.ends_with(ATTESTATION_KEY_FILE)),
        "{err:?}"
    );
    // A missing file.
    fs::remove_file(dir.join(ATTESTATION_KEY_FILE)).expect("removes");
    let err = load().expect_err("a partial directory");
    assert!(
        matches!(&err, KeysError::Missing { file, .. } if *file == ATTESTATION_KEY_FILE),
        "{err:?}"
    );
    assert!(err.to_string().contains(ATTESTATION_KEY_FILE), "{err}");
    assert!(!dir.join(ATTESTATION_KEY_FILE).exists(), "not regenerated");
    write(ATTESTATION_KEY_FILE, &attestation);
    load().expect("whole again");

    // A file where the directory should be.
    let file = tmp.0.join("a-file");
    fs::write(&file, b"").expect("writes");
    assert!(matches!(
        EmulatedTdxKeys::load_or_create(&file),
        Err(KeysError::NotADirectory(_))
    ));
}

fn verify_with_collateral(
    bytes: &[u8],
    roots: &TrustAnchors,
    expect: &Expectations,
    at: SystemTime,
    collateral: &Collateral,
) -> Verification {
    verify_quote(
        &Quote::parse(bytes).expect("parses"),
        roots,
        expect,
        at,
        Some(collateral),
    )
    .expect("runs")
}

fn tcb_detail(v: &Verification) -> (bool, String) {
    let c = v
        .check(check::TCB_STATUS)
        .unwrap_or_else(|| panic!("no TCB status check: {v:#?}"));
    (c.passed, c.detail.clone())
}

#[test]
fn emulated_collateral_gives_an_up_to_date_tcb() {
    let f = Fixture::new("collateral");
    let bytes = f.quote();
    let now = SystemTime::now();
    let collateral = f.keys.collateral(now).expect("collateral");
    let v = verify_with_collateral(&bytes, &f.roots(), &expect_td(), now, &collateral);
    assert_eq!(
        tcb_detail(&v),
        (true, "TCB status UpToDate".to_owned()),
        "{:#?}",
        v.failures().collect::<Vec<_>>()
    );
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // The JSON form `--collateral` reads round-trips.
    let json = serde_json::to_vec(&collateral).expect("serialises");
    assert_eq!(
        tdx::collateral_from_json(&json).expect("decodes"),
        collateral
    );

    // The collateral names what the quote and the PCK certificate say.
    let tcb_info: serde_json::Value =
        serde_json::from_str(&collateral.tcb_info).expect("TCB info is JSON");
    assert_eq!(tcb_info["id"], "TDX");
    assert_eq!(
        tcb_info["fmspc"],
        hex::encode(EMULATED_FMSPC).to_uppercase()
    );
    assert_eq!(tcb_info["tdxModuleIdentities"][0]["id"], "TDX_01");
    let qe: serde_json::Value =
        serde_json::from_str(&collateral.qe_identity).expect("QE identity is JSON");
    assert_eq!(qe["id"], "TD_QE");
    assert_eq!(qe["isvprodid"], INTEL_TD_QE_ISVPRODID);

    // It is valid for 30 days from its issue, not before and not after.
    let day = Duration::from_secs(24 * 3600);
    for (at, why) in [
        (now - day, "issue date is in the future"),
        (now + 31 * day, "expired"),
    ] {
        let v = verify_with_collateral(&bytes, &f.roots(), &expect_td(), at, &collateral);
        let (passed, detail) = tcb_detail(&v);
        assert!(!passed && detail.contains(why), "{why}: {detail}");
    }
    let v = verify_with_collateral(
        &bytes,
        &f.roots(),
        &expect_td(),
        now + 29 * day,
        &collateral,
    );
    assert!(tcb_detail(&v).0, "{:?}", tcb_detail(&v));
    // Decades on, the CRLs are out of date too: said in words, not as webpki's
    // `CrlExpired { time: UnixTime(..), .. }`.
    let v = verify_with_collateral(
        &bytes,
        &f.roots(),
        &expect_td(),
        now + 40 * 365 * day,
        &collateral,
    );
    let (passed, detail) = tcb_detail(&v);
    assert!(!passed);
    assert!(detail.contains("a CRL is out of date"), "{detail}");
    for check in v.failures() {
        assert!(
            !check.detail.contains(['{', '}']) && !check.detail.contains("UnixTime"),
            "{}: {}",
            check.name,
            check.detail
        );
    }
}

#[test]
fn emulated_collateral_is_checked_like_intels() {
    let f = Fixture::new("collateral-checks");
    let bytes = f.quote();
    let now = SystemTime::now();
    let good = f.keys.collateral(now).expect("collateral");
    let fails = |c: &Collateral, what: &str| {
        let v = verify_with_collateral(&bytes, &f.roots(), &expect_td(), now, c);
        let (passed, detail) = tcb_detail(&v);
        assert!(!passed, "{what}: passed with {detail}");
        detail
    };

    // A changed TCB info or QE identity no longer matches its signature.
    let mut c = good.clone();
    c.tcb_info = c.tcb_info.replace("\"UpToDate\"", "\"OutOfDate\"");
    assert_ne!(c.tcb_info, good.tcb_info);
    assert!(fails(&c, "tcb info").contains("Signature is invalid for tcb_info"));
    let mut c = good.clone();
    c.qe_identity = c.qe_identity.replace("\"isvsvn\":1", "\"isvsvn\":0");
    assert_ne!(c.qe_identity, good.qe_identity);
    assert!(fails(&c, "qe identity").contains("qe_identity"));
    let mut c = good.clone();
    c.tcb_info_signature[10] ^= 1;
    fails(&c, "tcb info signature");

    // Collateral of another hierarchy does not chain to this one's root.
    let other = Fixture::new("collateral-other");
    fails(
        &other.keys.collateral(now).expect("collateral"),
        "another root",
    );
    // Nor do the CRLs of another hierarchy verify.
    let mut c = good.clone();
    c.root_ca_crl = other.keys.collateral(now).expect("collateral").root_ca_crl;
    fails(&c, "another root's CRL");
    let mut c = good.clone();
    c.pck_crl = other.keys.collateral(now).expect("collateral").pck_crl;
    let detail = fails(&c, "another CA's CRL");
    assert!(
        detail.contains("a CRL's signature does not verify with its issuer's public key"),
        "{detail}"
    );

    // Without the emulated root trusted, the collateral is not Intel's.
    let v = verify_with_collateral(
        &bytes,
        &TrustAnchors::built_in().expect("roots"),
        &expect_td(),
        now,
        &good,
    );
    assert!(!tcb_detail(&v).0);

    // A debuggable TD fails the debug check, once: the appraisal leaves DEBUG to it.
    let debug_quote = f.quote_with_attributes(td_info().attributes | attributes::DEBUG);
    let v = verify_with_collateral(&debug_quote, &f.roots(), &expect_td(), now, &good);
    let failures: Vec<&str> = v.failures().map(|c| c.name).collect();
    assert_eq!(failures, [check::TD_DEBUG]);
    let allowed = Expectations {
        allow_debug: true,
        ..expect_td()
    };
    let v = verify_with_collateral(&debug_quote, &f.roots(), &allowed, now, &good);
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // So does a profiled one (TD attributes bits 4-6), which dcap-qvl's allow_debug
    // also covers.
    let profiled = f.quote_with_attributes(td_info().attributes | 1 << 5);
    let v = verify_with_collateral(&profiled, &f.roots(), &expect_td(), now, &good);
    let failures: Vec<&str> = v.failures().map(|c| c.name).collect();
    assert_eq!(failures, [check::TD_DEBUG]);
    let detail = &v.check(check::TD_DEBUG).expect("checked").detail;
    assert!(detail.contains("profiling"), "{detail}");
    let v = verify_with_collateral(&profiled, &f.roots(), &allowed, now, &good);
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // A PCK chain in the collateral does not replace the quote's (which the other
    // checks verified): the appraisal still uses the quote's.
    let mut c = good.clone();
    c.pck_certificate_chain =
        Some(String::from_utf8(other.keys.pck_chain_pem().to_vec()).expect("PEM is text"));
    let v = verify_with_collateral(&bytes, &f.roots(), &expect_td(), now, &c);
    assert_eq!(tcb_detail(&v), (true, "TCB status UpToDate".to_owned()));

    // dcap-qvl's other TD attribute rules stay in the appraisal: a TD without
    // SEPT_VE_DISABLE fails it.
    let quote = f.quote_with_attributes(td_info().attributes & !attributes::SEPT_VE_DISABLE);
    let v = verify_with_collateral(&quote, &f.roots(), &expect_td(), now, &good);
    let failures: Vec<&str> = v.failures().map(|c| c.name).collect();
    assert_eq!(failures, [check::TCB_STATUS]);
    assert!(
        tcb_detail(&v).1.contains("SEPT_VE_DISABLE"),
        "{:?}",
        tcb_detail(&v)
    );
}

#[test]
fn collateral_files_are_checked_on_load() {
    let f = Fixture::new("collateral-load");
    let dir = f.keys.dir().to_owned();
    for file in [
        crate::emulated::tdx::collateral::TCB_SIGNING_CERT_FILE,
        crate::emulated::tdx::collateral::TCB_SIGNING_KEY_FILE,
        crate::emulated::tdx::collateral::ROOT_CRL_FILE,
        crate::emulated::tdx::collateral::PCK_CRL_FILE,
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let mode = |file| {
        fs::metadata(dir.join(file))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode(crate::emulated::tdx::collateral::TCB_SIGNING_KEY_FILE),
        0o600
    );
    assert_eq!(mode(crate::emulated::tdx::collateral::ROOT_CRL_FILE), 0o644);

    // The CRLs swapped: each is signed by the other issuer.
    let root_crl =
        fs::read(dir.join(crate::emulated::tdx::collateral::ROOT_CRL_FILE)).expect("read");
    let pck_crl = fs::read(dir.join(crate::emulated::tdx::collateral::PCK_CRL_FILE)).expect("read");
    fs::write(
        dir.join(crate::emulated::tdx::collateral::ROOT_CRL_FILE),
        &pck_crl,
    )
    .expect("write");
    let e = EmulatedTdxKeys::load(&dir).expect_err("a swapped CRL");
    assert!(
        matches!(&e, KeysError::Corrupt { path, .. } if path.ends_with(crate::emulated::tdx::collateral::ROOT_CRL_FILE)),
        "{e}"
    );
    fs::write(
        dir.join(crate::emulated::tdx::collateral::ROOT_CRL_FILE),
        &root_crl,
    )
    .expect("write");
    EmulatedTdxKeys::load(&dir).expect("restored");

    // One file of the four missing is an incomplete directory.
    fs::remove_file(dir.join(crate::emulated::tdx::collateral::TCB_SIGNING_KEY_FILE))
        .expect("remove");
    let e = EmulatedTdxKeys::load(&dir).expect_err("a missing key");
    assert!(matches!(e, KeysError::Missing { .. }), "{e}");

    // None of them: a directory from before collateral, which loads and quotes but
    // has no collateral.
    for file in [
        crate::emulated::tdx::collateral::TCB_SIGNING_CERT_FILE,
        crate::emulated::tdx::collateral::ROOT_CRL_FILE,
        crate::emulated::tdx::collateral::PCK_CRL_FILE,
    ] {
        fs::remove_file(dir.join(file)).expect("remove");
    }
    let keys = EmulatedTdxKeys::load(&dir).expect("an older directory loads");
    let e = keys
        .collateral(SystemTime::now())
        .expect_err("no collateral");
    assert!(matches!(e, KeysError::NoCollateral(_)), "{e}");
    assert!(e.to_string().contains("remove the directory"), "{e}");
}

#[test]
fn the_td_attributes_an_image_governs_must_be_the_declared_ones() {
    let f = Fixture::new("attributes");
    let declaring = |policy| Expectations {
        policy: Some(policy),
        ..expect_td()
    };
    let verify_attributes = |attributes: u64, declared: u64| {
        let quote = Quote::parse(&f.quote_with_attributes(attributes)).expect("parses");
        verify_quote(
            &quote,
            &f.roots(),
            &declaring(declared),
            SystemTime::now(),
            None,
        )
        .expect("runs")
    };
    let sept = attributes::SEPT_VE_DISABLE;
    let v = verify_attributes(sept, sept);
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert!(v.check(check::TD_ATTRIBUTES).is_some());
    // Attributes the image does not govern (PKS) are the host's to choose.
    assert!(verify_attributes(sept | attributes::PKS, sept).passed());
    // Launched without SEPT_VE_DISABLE, or migratable, against the image's word.
    for launched in [0, sept | attributes::MIGRATABLE] {
        let v = verify_attributes(launched, sept);
        let failures: Vec<&str> = v.failures().map(|c| c.name).collect();
        assert_eq!(failures, [check::TD_ATTRIBUTES], "{launched:#x}");
        let detail = &v.check(check::TD_ATTRIBUTES).expect("checked").detail;
        assert!(
            detail.contains("the image declares SEPT_VE_DISABLE"),
            "{detail}"
        );
    }
}

#[test]
fn damaged_collateral_fails_the_appraisal_and_never_panics() {
    let f = Fixture::new("collateral-damage");
    let bytes = f.quote();
    let now = SystemTime::now();
    let good = f.keys.collateral(now).expect("collateral");
    let roots = f.roots();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 192,
        ..proptest::test_runner::Config::default()
    });
    let flip = |bytes: &mut Vec<u8>, index: usize, bit: u8| {
        if !bytes.is_empty() {
            let i = index % bytes.len();
            bytes[i] ^= 1 << bit;
        }
    };
    let flip_text = |text: &mut String, index: usize, bit: u8| {
        let mut b = std::mem::take(text).into_bytes();
        flip(&mut b, index, bit);
        *text = String::from_utf8_lossy(&b).into_owned();
    };
    runner
        .run(
            &(0..7usize, any::<usize>(), 0..8u8),
            |(field, index, bit)| {
                let mut c = good.clone();
                match field {
                    0 => flip_text(&mut c.tcb_info, index, bit),
                    1 => flip_text(&mut c.qe_identity, index, bit),
                    2 => flip(&mut c.tcb_info_signature, index, bit),
                    3 => flip(&mut c.qe_identity_signature, index, bit),
                    4 => flip(&mut c.root_ca_crl, index, bit),
                    5 => flip(&mut c.pck_crl, index, bit),
                    _ => flip_text(&mut c.tcb_info_issuer_chain, index, bit),
                }
                let v = verify_with_collateral(&bytes, &roots, &expect_td(), now, &c);
                // The signed texts and their signatures: any change fails. (The rest
                // only has to be refused or harmless: a flip in the PEM armour of the
                // chain's root, say, may leave a chain that still verifies.)
                if field < 4 {
                    prop_assert!(
                        !tcb_detail(&v).0,
                        "field {} byte {} bit {}",
                        field,
                        index,
                        bit
                    );
                }
                Ok(())
            },
        )
        .expect("no damage passes the appraisal");
}

/// A trust anchor that is not self-issued (its issuer's name differs from its
/// subject's) cannot anchor dcap-qvl's appraisal: its root revocation check asserts
/// that the root names itself, and panicked. The appraisal now fails with a message.
/// Found by the `collateral` fuzz target (tests/fuzz).
#[test]
fn collateral_under_a_root_that_is_not_self_issued_fails_without_panicking() {
    let f = Fixture::new("collateral-root-issuer");
    let bytes = f.quote();
    let now = SystemTime::now();
    let collateral = f.keys.collateral(now).expect("collateral");
    // The emulated root with one byte of its issuer's name changed: the same key, the
    // same subject, another issuer (the issuer comes first in the DER).
    let mut der = f.keys.root_cert().der().to_vec();
    let at = der
        .windows(7)
        .position(|w| w == b"Root CA")
        .expect("the root names itself Root CA");
    der[at + 6] = b'B';
    let root = Cert::from_der(&der).expect("still a certificate");
    assert_ne!(root.issuer_name(), root.subject_name());
    let roots = TrustAnchors::new(Vec::new(), root);
    let v = verify_with_collateral(&bytes, &roots, &Expectations::default(), now, &collateral);
    let (passed, detail) = tcb_detail(&v);
    assert!(!passed);
    assert!(detail.contains("not self-issued"), "{detail}");
}
