//! Rekor v2 `dsse` 0.0.2 log entries, which sigstore-types 0.15 cannot represent: set aside when
//! a bundle is read, then checked here with the sigstore-rust building blocks (entry body
//! parsing from sigstore-rekor, the Merkle proof from sigstore-merkle, the signed-note
//! checkpoint from sigstore-types, the log keys from the trusted root).
//!
//! Cosign 3 and sigstore-go log a DSSE bundle (every `cosign sign` and `cosign attest`) in
//! Rekor v2 as a `dsse` 0.0.2 entry; sigstore-verify 0.15.1 only knows Rekor v2's
//! `hashedrekord` 0.0.2 and its bundle type refuses the whole bundle. Everything else in such a
//! bundle (the envelope signature, the certificate chain, the RFC 3161 timestamps that give a
//! Rekor v2 bundle its signed time) is still verified by sigstore-verify on the bundle without
//! these entries. Remove this module when sigstore-verify reads `dsse` 0.0.2 itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore_crypto::Keyring;
use sigstore_types::{Checkpoint, HashAlgorithm, Sha256Hash};
use sigstore_verify::rekor::body::RekorEntryBody;

/// The kind and version this module handles.
const KIND: &str = "dsse";
const VERSION: &str = "0.0.2";

/// One Rekor v2 `dsse` 0.0.2 entry, as the bundle carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsseV2Entry {
    log_index: u64,
    canonicalized_body: Vec<u8>,
    proof_hashes: Vec<Sha256Hash>,
    checkpoint: String,
}

/// What the entry must say signed the envelope: the bundle's certificate, or the policy key
/// being tried.
#[derive(Debug, Clone, Copy)]
pub enum ExpectedVerifier<'a> {
    Certificate(&'a [u8]),
    PublicKey(&'a [u8]),
}

// The protobuf-JSON shape of a bundle's transparency log entry (only what is needed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    log_index: String,
    kind_version: RawKindVersion,
    #[serde(default)]
    inclusion_proof: Option<RawInclusionProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
struct RawInclusionProof {
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: RawCheckpoint,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

/// Takes the `dsse` 0.0.2 entries out of a bundle document (protobuf JSON), leaving the rest
/// for sigstore-types. A malformed entry of that kind is an error, never dropped.
pub fn set_aside(document: &mut serde_json::Value) -> Result<Vec<DsseV2Entry>, String> {
    let Some(entries) = document
        .pointer_mut("/verificationMaterial/tlogEntries")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Ok(Vec::new());
    };
    let mut set_aside = Vec::new();
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries.drain(..) {
        let is_dsse_v2 = entry.pointer("/kindVersion/kind").and_then(|v| v.as_str()) == Some(KIND)
            && entry
                .pointer("/kindVersion/version")
                .and_then(|v| v.as_str())
                == Some(VERSION);
        if is_dsse_v2 {
            set_aside.push(parse_entry(entry)?);
        } else {
            kept.push(entry);
        }
    }
    *entries = kept;
    Ok(set_aside)
}

fn parse_entry(entry: serde_json::Value) -> Result<DsseV2Entry, String> {
    let raw: RawEntry = serde_json::from_value(entry)
        .map_err(|err| format!("a Rekor v2 dsse entry is malformed: {err}"))?;
    debug_assert!(raw.kind_version.kind == KIND && raw.kind_version.version == VERSION);
    let log_index = raw
        .log_index
        .parse::<u64>()
        .map_err(|_| format!("a Rekor v2 dsse entry has log index {:?}", raw.log_index))?;
    let canonicalized_body = STANDARD
        .decode(raw.canonicalized_body.as_bytes())
        .map_err(|err| format!("a Rekor v2 dsse entry's body is not base64: {err}"))?;
    // Rekor v2 has no signed entry timestamp: the inclusion proof is the only evidence.
    let proof = raw
        .inclusion_proof
        .ok_or_else(|| "a Rekor v2 dsse entry has no inclusion proof".to_owned())?;
    let proof_hashes = proof
        .hashes
        .iter()
        .map(|hash| {
            let bytes = STANDARD
                .decode(hash.as_bytes())
                .map_err(|err| format!("an inclusion proof hash is not base64: {err}"))?;
            Sha256Hash::try_from(bytes.as_slice())
                .map_err(|err| format!("an inclusion proof hash is not SHA-256: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DsseV2Entry {
        log_index,
        canonicalized_body,
        proof_hashes,
        checkpoint: proof.checkpoint.envelope,
    })
}

/// Checks one entry: its body logs this envelope (payload hash, signature, signer), it is
/// included in the tree its checkpoint commits to, and the checkpoint is signed by a log of
/// the trusted root.
pub fn verify(
    entry: &DsseV2Entry,
    envelope: &sigstore_types::DsseEnvelope,
    expected: ExpectedVerifier<'_>,
    log_keys: &Keyring,
) -> Result<(), String> {
    verify_body(entry, envelope, expected)?;
    verify_inclusion(entry, log_keys)
}

fn verify_body(
    entry: &DsseV2Entry,
    envelope: &sigstore_types::DsseEnvelope,
    expected: ExpectedVerifier<'_>,
) -> Result<(), String> {
    let body = match RekorEntryBody::from_json(&entry.canonicalized_body, KIND, VERSION) {
        Ok(RekorEntryBody::DsseV002(body)) => body,
        Ok(_) => return Err("the Rekor v2 entry body is not a dsse 0.0.2 body".into()),
        Err(err) => return Err(format!("the Rekor v2 entry body is unreadable: {err}")),
    };
    let logged = &body.spec.dsse_v002;
    if logged.payload_hash.algorithm != HashAlgorithm::Sha2256 {
        return Err(format!(
            "the Rekor v2 entry hashes the payload with {:?}, not SHA-256",
            logged.payload_hash.algorithm
        ));
    }
    let payload_hash = Sha256::digest(envelope.payload.as_bytes());
    if logged.payload_hash.digest.as_bytes() != payload_hash.as_slice() {
        return Err("the Rekor v2 entry logs another payload than the bundle's envelope".into());
    }
    let signature = envelope.signature.sig.as_bytes();
    let signer_matches = logged.signatures.iter().any(|logged| {
        logged.content.as_bytes() == signature
            && match expected {
                ExpectedVerifier::Certificate(der) => logged
                    .verifier
                    .x509_certificate
                    .as_ref()
                    .is_some_and(|cert| cert.raw_bytes.as_bytes() == der),
                ExpectedVerifier::PublicKey(der) => logged
                    .verifier
                    .public_key
                    .as_ref()
                    .is_some_and(|key| key.raw_bytes.as_bytes() == der),
            }
    });
    if !signer_matches {
        return Err(
            "the Rekor v2 entry logs another signature or signer than the bundle's envelope".into(),
        );
    }
    Ok(())
}

fn verify_inclusion(entry: &DsseV2Entry, log_keys: &Keyring) -> Result<(), String> {
    let checkpoint = Checkpoint::from_text(&entry.checkpoint)
        .map_err(|err| format!("the Rekor v2 checkpoint is unreadable: {err}"))?;
    // Rekor v2 takes index, size and root from the entry and the signed checkpoint only; the
    // proof's duplicated fields are unauthenticated and ignored.
    let leaf = sigstore_merkle::hash_leaf(&entry.canonicalized_body);
    sigstore_merkle::verify_inclusion_proof(
        &leaf,
        entry.log_index,
        checkpoint.tree_size(),
        &entry.proof_hashes,
        checkpoint.root_hash(),
    )
    .map_err(|err| format!("the Rekor v2 inclusion proof does not verify: {err}"))?;
    let now = jiff::Timestamp::now();
    let message = checkpoint.signed_data();
    let mut known_key = false;
    for signature in checkpoint.signatures() {
        for key in log_keys.keys_by_hint(&signature.key_id, now) {
            known_key = true;
            if key.verify(message, &signature.signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(if known_key {
        "the Rekor v2 checkpoint's signature does not verify with the log key of the trusted root"
            .into()
    } else {
        "the Rekor v2 checkpoint is signed by no log the trusted root lists".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_dsse_v2_entries_are_set_aside_and_the_rest_is_kept_in_order() {
        let body = STANDARD.encode(b"{}");
        let mut document = json!({"verificationMaterial": {"tlogEntries": [
            {"logIndex": "1", "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"}},
            {"logIndex": "7", "kindVersion": {"kind": "dsse", "version": "0.0.2"},
             "inclusionProof": {"hashes": [STANDARD.encode([0u8; 32])],
                                "checkpoint": {"envelope": "log\n8\nAA==\n\n"}},
             "canonicalizedBody": body},
            {"logIndex": "2", "kindVersion": {"kind": "dsse", "version": "0.0.1"}},
        ]}});
        let aside = set_aside(&mut document).unwrap();
        assert_eq!(aside.len(), 1);
        assert_eq!(aside[0].log_index, 7);
        assert_eq!(aside[0].canonicalized_body, b"{}");
        let kept: Vec<&str> = document["verificationMaterial"]["tlogEntries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["logIndex"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["1", "2"]);
    }

    #[test]
    fn a_dsse_v2_entry_without_an_inclusion_proof_is_an_error_not_dropped() {
        let mut document = json!({"verificationMaterial": {"tlogEntries": [
            {"logIndex": "7", "kindVersion": {"kind": "dsse", "version": "0.0.2"},
             "canonicalizedBody": STANDARD.encode(b"{}")},
        ]}});
        let err = set_aside(&mut document).unwrap_err();
        assert!(err.contains("no inclusion proof"), "{err}");
    }

    #[test]
    fn a_bundle_without_log_entries_sets_nothing_aside() {
        let mut document = json!({"verificationMaterial": {}});
        assert!(set_aside(&mut document).unwrap().is_empty());
    }
}
