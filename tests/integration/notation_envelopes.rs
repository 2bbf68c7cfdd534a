//! Notation envelopes made by an independent signer (tests/tools/notation/sign.py: Python
//! `cryptography`, `pycose`, `asn1crypto`), verified by `portcullis::notation::verify`.
//!
//! Only a missing `python3` skips these (loudly); a missing Python package fails them, with a
//! pointer to scripts/install-python-tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use portcullis::notation::{
    self, CertSource, EnvelopeFormat, NotationError, NotationRequirement, NotationTrust,
    SignatureAlgorithm,
};
use rstest::rstest;

const IDENTITY: &str = "x509.subject: C=US, ST=WA, O=example, CN=signer";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns early from the test, loudly, when python3 is missing.
macro_rules! require_python {
    () => {
        if !python_available() {
            eprintln!(
                "\n!!!!!! SKIPPED {}: python3 is not installed, so the independent Notation \
                 signer cannot run. Install python3 and run scripts/install-python-tools.\n",
                module_path!()
            );
            return;
        }
    };
}

fn signer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/notation/sign.py")
}

fn run_signer(args: &[&str]) {
    let output = Command::new("python3")
        .arg(signer_script())
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "sign.py {args:?} failed ({}); if a module is missing run scripts/install-python-tools\n\
         stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new(alg: &str, extra: &[&str]) -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().to_str().expect("utf-8 path").to_string();
        let mut args = vec!["keygen", "--out", out.as_str(), "--alg", alg];
        args.extend_from_slice(extra);
        run_signer(&args);
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An envelope for `digest()` in `format` ("jws" or "cose"), with extra sign.py flags.
    fn sign(&self, format: &str, extra: &[&str]) -> Vec<u8> {
        let out = self.path(&format!("envelope-{}.{format}", extra.join("_")));
        let keys = self.dir.path().to_str().expect("utf-8 path");
        let digest = digest();
        let out_str = out.to_str().expect("utf-8 path");
        let mut args = vec![
            "sign",
            "--keys",
            keys,
            "--digest",
            digest.as_str(),
            "--media-type",
            MANIFEST,
            "--size",
            "1234",
            "--format",
            format,
            "--out",
            out_str,
        ];
        args.extend_from_slice(extra);
        run_signer(&args);
        std::fs::read(&out).expect("envelope written")
    }
}

fn media_type(format: &str) -> &'static str {
    match format {
        "jws" => notation::MEDIA_TYPE_JWS,
        _ => notation::MEDIA_TYPE_COSE,
    }
}

fn trust(ca: &Path, identities: &[&str], tsa: Option<&Path>) -> NotationTrust {
    NotationRequirement {
        trust_store: vec![CertSource::Path(ca.to_path_buf())],
        trusted_identities: identities.iter().map(|s| s.to_string()).collect(),
        tsa_trust_store: tsa
            .map(|p| vec![CertSource::Path(p.to_path_buf())])
            .unwrap_or_default(),
        signature_verification: None,
    }
    .compile()
    .expect("trust compiles")
}

fn verify(
    trust: &NotationTrust,
    format: &str,
    envelope: &[u8],
) -> Result<notation::NotationSigner, NotationError> {
    notation::verify(
        trust,
        media_type(format),
        envelope,
        &digest(),
        SystemTime::now(),
    )
}

#[rstest]
#[case::jws_es256("jws", "ES256")]
#[case::cose_es256("cose", "ES256")]
#[case::jws_ps256("jws", "PS256")]
#[case::cose_ps256("cose", "PS256")]
#[case::jws_es384("jws", "ES384")]
#[case::cose_ps384("cose", "PS384")]
fn accepted(#[case] format: &str, #[case] alg: &str) {
    require_python!();
    let keys = Keys::new(alg, &[]);
    let envelope = keys.sign(format, &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let signer = verify(&trust, format, &envelope).expect("verifies");
    assert_eq!(signer.algorithm.name(), alg);
    assert_eq!(signer.signing_scheme, "notary.x509");
    assert_eq!(
        signer.envelope,
        if format == "jws" {
            EnvelopeFormat::Jws
        } else {
            EnvelopeFormat::Cose
        }
    );
    assert!(signer.subject.contains("CN=signer"), "{}", signer.subject);
    assert!(signer.signing_time.is_some());
    assert!(!signer.timestamp_verified);
    assert_eq!(signer.target.digest, digest());
    assert_eq!(signer.target.size, 1234);
    // `*` trusts any signer of the trust store.
    let any = self::trust(&keys.path("ca.pem"), &["*"], None);
    verify(&any, format, &envelope).expect("verifies with *");
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn refused_by_another_trust_store_root(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let other = Keys::new("ES256", &[]);
    let envelope = keys.sign(format, &[]);
    let trust = trust(&other.path("ca.pem"), &[IDENTITY], None);
    let err = verify(&trust, format, &envelope).expect_err("another CA");
    assert!(matches!(err, NotationError::Untrusted(_)), "{err}");
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn refused_for_an_untrusted_identity(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("PS256", &[]);
    let envelope = keys.sign(format, &[]);
    let trust = trust(
        &keys.path("ca.pem"),
        &["x509.subject: C=US, ST=WA, O=example, CN=someone-else"],
        None,
    );
    let err = verify(&trust, format, &envelope).expect_err("identity");
    assert!(matches!(err, NotationError::Identity { .. }), "{err}");
    // The subject attributes match order-insensitively, and a subset is enough.
    let reordered = self::trust(
        &keys.path("ca.pem"),
        &["x509.subject: CN=signer, O=example, S=WA, C=US"],
        None,
    );
    verify(&reordered, format, &envelope).expect("reordered identity matches");
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn refused_for_another_digest(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let envelope = keys.sign(format, &["--wrong-digest"]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let err = verify(&trust, format, &envelope).expect_err("digest");
    assert!(matches!(err, NotationError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("signature is for another digest sha256:"),
        "{err}"
    );
}

#[rstest]
#[case::jws_es256("jws", "ES256")]
#[case::cose_es256("cose", "ES256")]
#[case::jws_ps256("jws", "PS256")]
#[case::cose_ps256("cose", "PS256")]
fn refused_when_the_payload_is_tampered(#[case] format: &str, #[case] alg: &str) {
    require_python!();
    let keys = Keys::new(alg, &[]);
    let envelope = keys.sign(format, &["--tamper"]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let err = verify(&trust, format, &envelope).expect_err("tampered");
    assert!(matches!(err, NotationError::BadSignature { .. }), "{err}");
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn refused_when_the_signing_certificate_expired(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("ES256", &["--expired"]);
    let envelope = keys.sign(format, &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let err = verify(&trust, format, &envelope).expect_err("expired certificate");
    assert!(
        matches!(
            err,
            NotationError::Untrusted(webpki::Error::CertExpired { .. })
        ),
        "{err}"
    );
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn expiry_is_honoured(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let past = keys.sign(format, &["--expiry", "-60"]);
    let err = verify(&trust, format, &past).expect_err("expired signature");
    assert!(matches!(err, NotationError::Expired(_)), "{err}");
    let future = keys.sign(format, &["--expiry", "3600"]);
    let signer = verify(&trust, format, &future).expect("not yet expired");
    assert!(signer.expiry.is_some());
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn timestamp_countersignature_is_verified(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("PS256", &[]);
    let tsa = keys.path("tsa-ca.pem");
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], Some(&tsa));
    let stamped = keys.sign(format, &["--timestamp"]);
    let signer = verify(&trust, format, &stamped).expect("timestamped");
    assert!(signer.timestamp_verified);
    assert!(signer.timestamp.is_some());

    // With a TSA trust store configured, a timestamp is required.
    let unstamped = keys.sign(format, &[]);
    let err = verify(&trust, format, &unstamped).expect_err("no timestamp");
    assert!(matches!(err, NotationError::Timestamp(_)), "{err}");

    // A TSA the TSA trust store does not know.
    let other = Keys::new("ES256", &[]);
    let wrong_tsa = self::trust(
        &keys.path("ca.pem"),
        &[IDENTITY],
        Some(&other.path("tsa-ca.pem")),
    );
    let err = verify(&wrong_tsa, format, &stamped).expect_err("unknown TSA");
    assert!(matches!(err, NotationError::TimestampUntrusted(_)), "{err}");

    // Without a TSA trust store the token is not needed, and the chain is checked at `now`.
    let no_tsa = self::trust(&keys.path("ca.pem"), &[IDENTITY], None);
    verify(&no_tsa, format, &stamped).expect("a timestamp is not needed without a TSA store");
}

#[rstest]
#[case::jws("jws")]
#[case::cose("cose")]
fn unknown_critical_headers_and_schemes_are_refused(#[case] format: &str) {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let extra = keys.sign(format, &["--crit", "com.example.mustUnderstand"]);
    let err = verify(&trust, format, &extra).expect_err("unknown crit");
    assert!(matches!(err, NotationError::UnknownCritical(_)), "{err}");
    let sa = keys.sign(format, &["--scheme", "notary.x509.signingAuthority"]);
    let err = verify(&trust, format, &sa).expect_err("signing authority");
    assert!(matches!(err, NotationError::UnsupportedScheme(_)), "{err}");
}

#[test]
fn alg_must_agree_with_the_signing_key() {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    // sign.py signs with the ES256 key but labels the JWS ES384.
    let envelope = keys.sign("jws", &["--alg-override", "ES384"]);
    let err = verify(&trust, "jws", &envelope).expect_err("alg substitution");
    assert!(matches!(err, NotationError::Key(_)), "{err}");
    let _ = SignatureAlgorithm::ES384;
}

#[test]
fn envelope_of_the_other_format_is_refused() {
    require_python!();
    let keys = Keys::new("ES256", &[]);
    let trust = trust(&keys.path("ca.pem"), &[IDENTITY], None);
    let jws = keys.sign("jws", &[]);
    let err = verify(&trust, "cose", &jws).expect_err("JWS given as COSE");
    assert!(matches!(err, NotationError::MalformedCose(_)), "{err}");
    let err = notation::verify(
        &trust,
        "application/x-other",
        &jws,
        &digest(),
        SystemTime::now(),
    )
    .expect_err("media type");
    assert!(matches!(err, NotationError::UnknownMediaType(_)), "{err}");
}
