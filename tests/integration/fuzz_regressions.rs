//! Every input a fuzz target ever crashed on, kept in `fuzz/regressions/<target>/` and fed to
//! the same entry point here, so the fix stays fixed without nightly or cargo-fuzz
//! (docs/fuzzing.md). Each input must be answered (accepted or refused), never panic; the
//! fuzz targets' stronger properties are checked where the crash was about them.

use std::path::PathBuf;
use std::time::Duration;

use portcullis::admission;
use portcullis::config::LoadedConfig;
use portcullis::notation::{self, MEDIA_TYPE_COSE, MEDIA_TYPE_JWS};
use portcullis::reference::{ImageGlobs, ImageRef};
use portcullis::signature::artefact::{self, ClassicMaterial};

/// The kept inputs of one target (none yet is fine: the directory may not exist).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "README.md")
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[tokio::test]
async fn admission_review_inputs_are_answered() {
    let engine = crate::common::engine(None);
    for (name, bytes) in inputs("admission_review") {
        let answer = admission::handle(&engine, &bytes, Some(Duration::from_secs(10))).await;
        if let Ok((review, verdict)) = answer {
            let response = review.response.expect(&name);
            assert_eq!(response.allowed, verdict.allowed, "{name}");
        }
    }
}

#[test]
fn image_reference_inputs_parse_or_are_refused() {
    for (name, bytes) in inputs("image_reference") {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ImageGlobs::new([text.as_ref()]);
        if let Ok(image) = ImageRef::parse(&text) {
            let again = ImageRef::parse(&image.normalized());
            assert_eq!(
                again.map(|i| i.normalized()).ok(),
                Some(image.normalized()),
                "{name}: normalisation is idempotent"
            );
        }
    }
}

#[test]
fn config_inputs_load_or_are_refused() {
    for (name, bytes) in inputs("config") {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(err) = LoadedConfig::from_yaml(&text, &name) {
            assert!(!err.to_string().is_empty(), "{name}");
        }
    }
}

#[test]
fn signature_format_inputs_parse_or_are_refused() {
    // The first byte picks the parser, as in fuzz/fuzz_targets/signature_formats.rs.
    for (name, bytes) in inputs("signature_formats") {
        let Some((&selector, input)) = bytes.split_first() else {
            continue;
        };
        let mut split = input.splitn(2, |b| *b == 0);
        let first = split.next().unwrap_or_default();
        let parts: Vec<String> = split
            .next()
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let part = |n: usize| parts.get(n).map(String::as_str).filter(|s| !s.is_empty());
        let material = ClassicMaterial {
            signature_b64: part(0),
            certificate_pem: part(1),
            chain_pem: part(2),
            rekor_bundle: part(3),
            rfc3161_timestamp: part(4),
        };
        match selector % 7 {
            0 => {
                if let Ok((bundle, _)) = artefact::parse_bundle(input) {
                    let _ = artefact::statement_of(&bundle);
                }
            }
            1 => drop(artefact::bundle_from_simple_signing(first, &material)),
            2 => drop(artefact::bundles_from_dsse_layer(first, &material)),
            3 => drop(notation::parse_envelope(MEDIA_TYPE_JWS, input)),
            4 => drop(notation::parse_envelope(MEDIA_TYPE_COSE, input)),
            5 => assert!(
                notation::check_timestamp_token(input, b"signature").is_err(),
                "{name}"
            ),
            _ => drop(serde_json::from_slice::<artefact::Statement>(input)),
        }
    }
}
