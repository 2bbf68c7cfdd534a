//! Signature, bundle and attestation parsing: everything portcullis reads from a registry
//! before any cryptography. The first byte picks the parser, the rest is its input:
//!
//! - `0`: a Sigstore bundle (`artefact::parse_bundle`, with Rekor v2 `dsse` entries set aside),
//!   then its in-toto statement (`statement_of`);
//! - `1`: a classic `.sig` layer (`bundle_from_simple_signing`): NUL-separated payload,
//!   signature, certificate PEM, chain PEM, Rekor bundle and RFC 3161 annotations;
//! - `2`: a classic `.att` layer (`bundles_from_dsse_layer`): the DSSE envelope, then the same
//!   annotations;
//! - `3` / `4`: a Notation JWS / COSE envelope (`notation::parse_envelope`);
//! - `5`: an RFC 3161 timestamp token (`notation::check_timestamp_token`);
//! - `6`: an in-toto statement (`Statement::names_digest`).
//!
//! Asserted beyond "no panic": a parsed bundle serialises and reads back as the same bundle
//! with nothing left to set aside; a `.att` layer yields one bundle per envelope signature,
//! each a DSSE bundle; a Notation envelope parses as the format its media type names; a
//! timestamp is never trusted by an empty TSA trust store; every subject digest a statement
//! lists is one it names, in either case.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::notation::{self, EnvelopeFormat, MEDIA_TYPE_COSE, MEDIA_TYPE_JWS};
use portcullis::signature::artefact::{self, ClassicMaterial, Statement};
use sigstore_types::{Bundle, SignatureContent};

/// The `n`th NUL-separated part, as an annotation value (absent when empty).
fn part(parts: &[String], n: usize) -> Option<&str> {
    parts.get(n).map(String::as_str).filter(|s| !s.is_empty())
}

fn material(parts: &[String]) -> ClassicMaterial<'_> {
    ClassicMaterial {
        signature_b64: part(parts, 0),
        certificate_pem: part(parts, 1),
        chain_pem: part(parts, 2),
        rekor_bundle: part(parts, 3),
        rfc3161_timestamp: part(parts, 4),
    }
}

fn check_statement(statement: &Statement) {
    for subject in &statement.subject {
        for (algorithm, hex) in &subject.digest {
            if algorithm.contains(':') {
                continue; // `a:b:c` splits at the first colon: not a digest anyone writes.
            }
            let digest = format!("{algorithm}:{hex}");
            assert!(statement.names_digest(&digest), "{digest:?} not named");
            let upper = format!("{algorithm}:{}", hex.to_ascii_uppercase());
            assert!(statement.names_digest(&upper), "{upper:?} not named");
        }
    }
}

fn check_bundle(bundle: &Bundle) {
    if let Some(Ok(statement)) = artefact::statement_of(bundle) {
        check_statement(&statement);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => {
            let Ok((bundle, _rekor_v2)) = artefact::parse_bundle(input) else {
                return;
            };
            check_bundle(&bundle);
            let json = bundle.to_json().expect("a parsed bundle serialises");
            let (again, set_aside) = artefact::parse_bundle(json.as_bytes())
                .unwrap_or_else(|err| panic!("a serialised bundle does not read back: {err}"));
            assert_eq!(again, bundle, "bundle JSON round trip");
            assert!(set_aside.is_empty(), "set-aside entries came back");
        }
        1 => {
            let mut split = input.splitn(2, |b| *b == 0);
            let payload = split.next().unwrap_or_default();
            let rest = split.next().unwrap_or_default();
            let parts: Vec<String> = rest
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if let Ok(bundle) = artefact::bundle_from_simple_signing(payload, &material(&parts)) {
                assert!(matches!(
                    bundle.content,
                    SignatureContent::MessageSignature(_)
                ));
            }
        }
        2 => {
            let mut split = input.splitn(2, |b| *b == 0);
            let envelope = split.next().unwrap_or_default();
            let rest = split.next().unwrap_or_default();
            let parts: Vec<String> = rest
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let Ok(bundles) = artefact::bundles_from_dsse_layer(envelope, &material(&parts)) else {
                return;
            };
            let signatures = serde_json::from_slice::<serde_json::Value>(envelope)
                .ok()
                .and_then(|v| v.get("signatures").and_then(|s| s.as_array()).map(Vec::len));
            assert_eq!(Some(bundles.len()), signatures, "one bundle per signature");
            for bundle in &bundles {
                assert!(matches!(bundle.content, SignatureContent::DsseEnvelope(_)));
                check_bundle(bundle);
            }
        }
        3 => {
            if let Ok((format, _)) = notation::parse_envelope(MEDIA_TYPE_JWS, input) {
                assert_eq!(format, EnvelopeFormat::Jws);
            }
        }
        4 => {
            if let Ok((format, _)) = notation::parse_envelope(MEDIA_TYPE_COSE, input) {
                assert_eq!(format, EnvelopeFormat::Cose);
            }
        }
        5 => {
            let result = notation::check_timestamp_token(input, b"signature");
            assert!(result.is_err(), "an empty TSA trust store trusted a token");
        }
        _ => {
            if let Ok(statement) = serde_json::from_slice::<Statement>(input) {
                check_statement(&statement);
            }
        }
    }
});
