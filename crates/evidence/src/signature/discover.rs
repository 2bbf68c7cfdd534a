//! Finding a digest's signatures and attestations in the registry (I/O): the classic
//! `.sig` / `.att` tags, the OCI referrers API and the referrers tag schema. What is found is
//! turned into [`Artefact`]s for the pure judge; nothing here decides anything.

use crate::registry::{Call, Descriptor, Manifest, RegistryClient, RegistryError, cosign_tag};
use portcullis_core::reference::ImageRef;

use super::artefact::{
    self, Artefact, BUNDLE_MEDIA_TYPE_PREFIX, COSIGN_SIGN_PREDICATE, ClassicMaterial, Content,
    DSSE_MEDIA_TYPE, Format, NOTATION_ARTIFACT_TYPE, Place, SIMPLE_SIGNING_MEDIA_TYPE,
};

/// Largest number of artefacts read per place and digest (a hostile registry could list
/// thousands).
const MAX_ARTEFACTS: usize = 32;
/// The referrer annotation naming a bundle's predicate type.
const PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// Notation envelope media types.
const JWS_MEDIA_TYPE: &str = "application/jose+json";
const COSE_MEDIA_TYPE: &str = "application/cose";

/// Everything the registry holds about one digest's signatures and attestations.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub artefacts: Vec<Artefact>,
    /// Problems worth telling (a place that answered something unreadable).
    pub notes: Vec<String>,
    /// Whether attestations (the `.att` tag, attestation bundles) were read.
    pub with_attestations: bool,
}

impl Collected {
    /// Whether anything signature-like was found at all.
    pub fn is_empty(&self) -> bool {
        self.artefacts.is_empty()
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Read the `.att` tag and attestation bundles too.
    pub attestations: bool,
    /// Predicate types that make a bundle a signature (read even when attestations are not).
    pub signature_predicates: Vec<String>,
}

/// Fetches what the registry holds for `digest`. Registry failures other than "not found"
/// are errors (the caller applies `onError`); an unreadable artefact becomes an
/// [`Content::Unreadable`] entry or a note, never a silent skip.
pub async fn collect(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    wanted: Wanted,
) -> Result<Collected, RegistryError> {
    // The three places are independent: read them at once (the latency of one place, not
    // the sum of three), then merge in a fixed order so that what is found is listed the
    // same way every time and the first failure, in that order, is the one reported.
    let (mut sig_tag, mut att_tag, mut listed) = (
        Collected::default(),
        Collected::default(),
        Collected::default(),
    );
    let (sig_read, att_read, listed_read) = futures_util::join!(
        classic_signatures(registry, image, digest, call, &mut sig_tag),
        async {
            if wanted.attestations {
                classic_attestations(registry, image, digest, call, &mut att_tag).await
            } else {
                Ok(())
            }
        },
        referrers(registry, image, digest, call, &wanted, &mut listed),
    );
    sig_read?;
    att_read?;
    listed_read?;
    let mut collected = Collected {
        with_attestations: wanted.attestations,
        ..Collected::default()
    };
    for part in [sig_tag, att_tag, listed] {
        collected.artefacts.extend(part.artefacts);
        collected.notes.extend(part.notes);
    }
    Ok(collected)
}

async fn classic_signatures(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    collected: &mut Collected,
) -> Result<(), RegistryError> {
    let Some(manifest) = registry
        .manifest_by_tag(image, &cosign_tag(digest, "sig"), call)
        .await?
    else {
        return Ok(());
    };
    let Manifest::Image { layers, .. } = manifest else {
        collected
            .notes
            .push("the .sig tag holds an index, not a signature manifest".into());
        return Ok(());
    };
    for layer in layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .take(MAX_ARTEFACTS)
    {
        let payload = registry.blob(image, layer, call).await?;
        let material = ClassicMaterial::from_annotations(layer.annotations.as_ref());
        let content = match artefact::bundle_from_simple_signing(&payload, &material) {
            Ok(bundle) => Content::Bundle {
                bundle: Box::new(bundle),
                signed_payload: Some(payload),
                // Classic layers carry a Rekor v1 bundle annotation, never a v2 entry.
                rekor_v2_dsse: Vec::new(),
            },
            Err(why) => Content::Unreadable(why),
        };
        collected.artefacts.push(Artefact {
            place: Place::SigTag,
            format: Format::CosignSimpleSigning,
            source_digest: layer.digest.clone(),
            content,
        });
    }
    Ok(())
}

async fn classic_attestations(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    collected: &mut Collected,
) -> Result<(), RegistryError> {
    let Some(Manifest::Image { layers, .. }) = registry
        .manifest_by_tag(image, &cosign_tag(digest, "att"), call)
        .await?
    else {
        return Ok(());
    };
    for layer in layers
        .iter()
        .filter(|l| l.media_type == DSSE_MEDIA_TYPE)
        .take(MAX_ARTEFACTS)
    {
        let envelope = registry.blob(image, layer, call).await?;
        let material = ClassicMaterial::from_annotations(layer.annotations.as_ref());
        match artefact::bundles_from_dsse_layer(&envelope, &material) {
            Ok(bundles) => {
                for bundle in bundles.into_iter().take(MAX_ARTEFACTS) {
                    collected.artefacts.push(Artefact {
                        place: Place::AttTag,
                        format: Format::CosignDsse,
                        source_digest: layer.digest.clone(),
                        content: Content::Bundle {
                            bundle: Box::new(bundle),
                            signed_payload: None,
                            rekor_v2_dsse: Vec::new(),
                        },
                    });
                }
            }
            Err(why) => collected.artefacts.push(Artefact {
                place: Place::AttTag,
                format: Format::CosignDsse,
                source_digest: layer.digest.clone(),
                content: Content::Unreadable(why),
            }),
        }
    }
    Ok(())
}

fn is_bundle_type(text: &str) -> bool {
    text.starts_with(BUNDLE_MEDIA_TYPE_PREFIX)
}

async fn referrers(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    wanted: &Wanted,
    collected: &mut Collected,
) -> Result<(), RegistryError> {
    let listing = registry
        .referrers_listing(image, digest, None, call)
        .await?;
    let place = match listing.source {
        crate::registry::ReferrersSource::TagSchema => Place::ReferrersTagSchema,
        _ => Place::ReferrersApi,
    };
    if listing.truncated {
        collected.notes.push(format!(
            "the registry lists more referrers than portcullis reads; only the first {} were looked at",
            listing.descriptors.len()
        ));
    }
    let mut read = 0usize;
    for referrer in &listing.descriptors {
        let artifact_type = referrer.artifact_type.as_deref().unwrap_or_default();
        let notation = artifact_type == NOTATION_ARTIFACT_TYPE;
        if !notation && !is_bundle_type(artifact_type) {
            continue;
        }
        if !notation && !wanted.attestations {
            // Attestation bundles announce their predicate type; skip what cannot be a
            // signature when attestations are not wanted (one manifest and blob less each).
            let predicate = referrer
                .annotations
                .as_ref()
                .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION));
            let signs =
                |p: &String| p == COSIGN_SIGN_PREDICATE || wanted.signature_predicates.contains(p);
            if predicate.is_some_and(|p| !signs(p)) {
                continue;
            }
        }
        read += 1;
        if read > MAX_ARTEFACTS {
            collected.notes.push(format!(
                "more than {MAX_ARTEFACTS} signature referrers; the rest were not read"
            ));
            break;
        }
        let artefact = referrer_artefact(registry, image, call, referrer, place, notation).await?;
        collected.artefacts.push(artefact);
    }
    Ok(())
}

async fn referrer_artefact(
    registry: &RegistryClient,
    image: &ImageRef,
    call: &Call,
    referrer: &Descriptor,
    place: Place,
    notation: bool,
) -> Result<Artefact, RegistryError> {
    let unreadable = |format, why: String| Artefact {
        place,
        format,
        source_digest: referrer.digest.clone(),
        content: Content::Unreadable(why),
    };
    let default_format = if notation {
        Format::NotationJws
    } else {
        Format::SigstoreBundle
    };
    let manifest = match registry.manifest(image, &referrer.digest, call).await {
        Ok(manifest) => manifest,
        Err(RegistryError::NotFound { .. }) => {
            return Ok(unreadable(
                default_format,
                "the referrer's manifest is listed but missing".into(),
            ));
        }
        Err(RegistryError::Protocol { what: why, .. }) => {
            return Ok(unreadable(default_format, why));
        }
        Err(err) => return Err(err),
    };
    let Manifest::Image { layers, .. } = manifest else {
        return Ok(unreadable(
            default_format,
            "the referrer is an index, not a manifest".into(),
        ));
    };
    let layer = layers.iter().find(|l| {
        if notation {
            l.media_type == JWS_MEDIA_TYPE || l.media_type == COSE_MEDIA_TYPE
        } else {
            is_bundle_type(&l.media_type)
        }
    });
    let Some(layer) = layer else {
        return Ok(unreadable(
            default_format,
            "the referrer has no bundle or envelope layer".into(),
        ));
    };
    let bytes = match registry.blob(image, layer, call).await {
        Ok(bytes) => bytes,
        Err(RegistryError::Protocol { what: why, .. }) => {
            return Ok(unreadable(default_format, why));
        }
        Err(err) => return Err(err),
    };
    if notation {
        let format = if layer.media_type == COSE_MEDIA_TYPE {
            Format::NotationCose
        } else {
            Format::NotationJws
        };
        return Ok(Artefact {
            place,
            format,
            source_digest: referrer.digest.clone(),
            content: Content::Notation {
                media_type: layer.media_type.clone(),
                envelope: bytes,
            },
        });
    }
    Ok(Artefact {
        place,
        format: Format::SigstoreBundle,
        source_digest: referrer.digest.clone(),
        content: match artefact::parse_bundle(&bytes) {
            Ok((bundle, rekor_v2_dsse)) => Content::Bundle {
                bundle: Box::new(bundle),
                signed_payload: None,
                rekor_v2_dsse,
            },
            Err(why) => Content::Unreadable(why),
        },
    })
}

#[cfg(test)]
mod tests {
    //! Discovery against a stand-in registry on 127.0.0.1: a few lines of HTTP/1.1 that
    //! answer fixed paths (everything else is 404) and record what was asked.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::Instant;

    use super::*;
    use crate::credentials::Credential;
    use crate::registry::OCI_INDEX_MEDIA_TYPE;
    use portcullis_core::config::{EvidenceSettings, RegistrySettings};

    const REPO: &str = "team/app";
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const SLSA: &str = "https://slsa.dev/provenance/v1";

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[derive(Clone)]
    struct Answer {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    }

    /// What the stand-in registry answers, by path.
    #[derive(Default)]
    struct Fake {
        routes: BTreeMap<String, Answer>,
    }

    impl Fake {
        fn put(&mut self, path: String, status: u16, content_type: &str, body: Vec<u8>) {
            self.routes.insert(
                path,
                Answer {
                    status,
                    content_type: content_type.into(),
                    body,
                },
            );
        }

        /// Stores a blob; returns its descriptor.
        fn blob(&mut self, media_type: &str, bytes: &[u8], annotations: Value) -> Value {
            let digest = sha(bytes);
            self.put(
                format!("/v2/{REPO}/blobs/{digest}"),
                200,
                "application/octet-stream",
                bytes.to_vec(),
            );
            json!({"mediaType": media_type, "digest": digest, "size": bytes.len(),
                   "annotations": annotations})
        }

        /// Stores an image manifest with these layers; returns its digest and bytes.
        fn manifest(
            &mut self,
            layers: Vec<Value>,
            artifact_type: Option<&str>,
        ) -> (String, Vec<u8>) {
            let config = self.blob("application/vnd.oci.empty.v1+json", b"{}", json!({}));
            let mut manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                      "config": config, "layers": layers});
            if let Some(artifact_type) = artifact_type {
                manifest["artifactType"] = json!(artifact_type);
            }
            let bytes = serde_json::to_vec(&manifest).unwrap();
            let digest = sha(&bytes);
            self.put(
                format!("/v2/{REPO}/manifests/{digest}"),
                200,
                OCI_MANIFEST,
                bytes.clone(),
            );
            (digest, bytes)
        }

        fn tag(&mut self, tag: &str, media_type: &str, bytes: Vec<u8>) {
            self.put(
                format!("/v2/{REPO}/manifests/{tag}"),
                200,
                media_type,
                bytes,
            );
        }

        /// A referrer manifest with one layer; returns its descriptor for a listing.
        fn referrer(
            &mut self,
            artifact_type: &str,
            layer_media_type: &str,
            layer: &[u8],
            annotations: Value,
        ) -> Value {
            let layer = self.blob(layer_media_type, layer, json!({}));
            let (digest, bytes) = self.manifest(vec![layer], Some(artifact_type));
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": bytes.len(),
                   "artifactType": artifact_type, "annotations": annotations})
        }

        /// The referrers API answer for the subject digest.
        fn referrers_api(&mut self, subject: &str, descriptors: Vec<Value>) {
            self.put(
                format!("/v2/{REPO}/referrers/{subject}"),
                200,
                OCI_INDEX_MEDIA_TYPE,
                index(descriptors),
            );
        }
    }

    fn index(descriptors: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE,
                                   "manifests": descriptors}),
        )
        .unwrap()
    }

    /// A minimal, well-formed Sigstore bundle (key-signed message signature).
    fn bundle_json() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256",
                                  "digest": BASE64.encode(Sha256::digest(b"image"))},
                "signature": "MEUCIQ=="}
        }))
        .unwrap()
    }

    /// A running stand-in registry: its host and the paths asked for so far.
    struct Running {
        host: String,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Running {
        fn asked(&self, path: &str) -> bool {
            self.seen.lock().unwrap().iter().any(|p| p == path)
        }
    }

    async fn serve(fake: Fake) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let routes = Arc::new(fake.routes);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, seen) = (routes.clone(), recorded.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, &routes, &seen).await;
                });
            }
        });
        Running { host, seen }
    }

    async fn answer(
        mut stream: TcpStream,
        routes: &BTreeMap<String, Answer>,
        seen: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buffer[..read]);
        }
        let text = String::from_utf8_lossy(&request);
        let target = text.split_whitespace().nth(1).unwrap_or("/");
        let path = target
            .split('?')
            .next()
            .unwrap_or(target)
            .replace("%3A", ":");
        seen.lock().unwrap().push(path.clone());
        let found = if path == "/v2/" {
            Some(Answer {
                status: 200,
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
            })
        } else {
            routes.get(&path).cloned()
        };
        let answer = found.unwrap_or(Answer {
            status: 404,
            content_type: "text/plain".into(),
            body: b"404 page not found".to_vec(),
        });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            answer.status,
            answer.content_type,
            answer.body.len()
        );
        if answer.status == 200 {
            head.push_str(&format!("Docker-Content-Digest: {}\r\n", sha(&answer.body)));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&answer.body).await?;
        stream.shutdown().await
    }

    /// The digest whose signatures are looked for.
    fn subject() -> String {
        sha(b"the image")
    }

    async fn collect_from(running: &Running, wanted: Wanted) -> Result<Collected, RegistryError> {
        let client = RegistryClient::new(
            &[RegistrySettings {
                host: running.host.clone(),
                insecure: true,
                ca_file: None,
                credentials: None,
            }],
            &EvidenceSettings::default(),
        )
        .unwrap();
        let digest = subject();
        let image = ImageRef::parse(&format!("{}/{REPO}@{digest}", running.host)).unwrap();
        let call = Call {
            deadline: Instant::now() + Duration::from_secs(20),
            credential: Credential::Anonymous,
            priority: crate::source::Priority::Admission,
        };
        collect(&client, &image, &digest, &call, wanted).await
    }

    fn signatures_only() -> Wanted {
        Wanted::default()
    }

    fn with_attestations() -> Wanted {
        Wanted {
            attestations: true,
            ..Wanted::default()
        }
    }

    fn unreadable(artefact: &Artefact) -> &str {
        match &artefact.content {
            Content::Unreadable(why) => why,
            other => panic!("not unreadable: {other:?}"),
        }
    }

    fn summary(collected: &Collected) -> Vec<(Place, Format)> {
        collected
            .artefacts
            .iter()
            .map(|a| (a.place, a.format))
            .collect()
    }

    #[tokio::test]
    async fn nothing_is_found_where_the_registry_holds_nothing() {
        let running = serve(Fake::default()).await;
        let collected = collect_from(&running, with_attestations()).await.unwrap();
        assert!(collected.is_empty());
        assert!(collected.notes.is_empty(), "{:?}", collected.notes);
        assert!(collected.with_attestations);
        // The referrers API answered 404, so the referrers tag schema was tried too.
        let tag = subject().replace(':', "-");
        assert!(running.asked(&format!("/v2/{REPO}/manifests/{tag}")));
    }

    #[tokio::test]
    async fn simple_signing_layers_of_the_sig_tag_are_found_and_other_layers_ignored() {
        let mut fake = Fake::default();
        let payload = br#"{"critical":{"type":"cosign container image signature"}}"#;
        let signed = fake.blob(
            SIMPLE_SIGNING_MEDIA_TYPE,
            payload,
            json!({(artefact::SIGNATURE_ANNOTATION): "MEUCIQ=="}),
        );
        let unsigned = fake.blob(SIMPLE_SIGNING_MEDIA_TYPE, b"{}", json!({}));
        let other = fake.blob("application/octet-stream", b"junk", json!({}));
        let signed_digest = signed["digest"].as_str().unwrap().to_owned();
        let unsigned_digest = unsigned["digest"].as_str().unwrap().to_owned();
        let other_digest = other["digest"].as_str().unwrap().to_owned();
        let (_, sig) = fake.manifest(vec![signed, other, unsigned], None);
        fake.tag(&cosign_tag(&subject(), "sig"), OCI_MANIFEST, sig);
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert_eq!(
            summary(&collected),
            [
                (Place::SigTag, Format::CosignSimpleSigning),
                (Place::SigTag, Format::CosignSimpleSigning),
            ]
        );
        let first = &collected.artefacts[0];
        assert_eq!(first.source_digest, signed_digest);
        match &first.content {
            Content::Bundle { signed_payload, .. } => {
                assert_eq!(signed_payload.as_deref(), Some(&payload[..]));
            }
            other => panic!("not a bundle: {other:?}"),
        }
        assert_eq!(collected.artefacts[1].source_digest, unsigned_digest);
        assert!(
            unreadable(&collected.artefacts[1]).contains("dev.cosignproject.cosign/signature"),
            "{}",
            unreadable(&collected.artefacts[1])
        );
        assert!(!running.asked(&format!("/v2/{REPO}/blobs/{other_digest}")));
    }

    #[tokio::test]
    async fn a_sig_tag_holding_an_index_is_a_note_not_a_signature() {
        let mut fake = Fake::default();
        fake.tag(
            &cosign_tag(&subject(), "sig"),
            OCI_INDEX_MEDIA_TYPE,
            index(vec![]),
        );
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert!(collected.is_empty());
        assert_eq!(
            collected.notes,
            ["the .sig tag holds an index, not a signature manifest"]
        );
    }

    /// A `.att` tag with one DSSE layer holding two signatures and one broken DSSE layer.
    fn att_tag(fake: &mut Fake) {
        let envelope = json!({"payloadType": artefact::IN_TOTO_PAYLOAD_TYPE,
                              "payload": BASE64.encode(b"{}"),
                              "signatures": [{"sig": "MEUCIQ=="}, {"sig": "MEYCIQ=="}]});
        let good = fake.blob(
            DSSE_MEDIA_TYPE,
            &serde_json::to_vec(&envelope).unwrap(),
            json!({}),
        );
        let broken = fake.blob(DSSE_MEDIA_TYPE, b"[]", json!({}));
        let (_, att) = fake.manifest(vec![good, broken], None);
        fake.tag(&cosign_tag(&subject(), "att"), OCI_MANIFEST, att);
    }

    #[tokio::test]
    async fn the_att_tag_gives_one_artefact_per_dsse_signature_when_attestations_are_wanted() {
        let mut fake = Fake::default();
        att_tag(&mut fake);
        let running = serve(fake).await;
        let collected = collect_from(&running, with_attestations()).await.unwrap();
        assert_eq!(
            summary(&collected),
            [
                (Place::AttTag, Format::CosignDsse),
                (Place::AttTag, Format::CosignDsse),
                (Place::AttTag, Format::CosignDsse),
            ]
        );
        assert!(matches!(
            collected.artefacts[0].content,
            Content::Bundle {
                signed_payload: None,
                ..
            }
        ));
        assert!(matches!(
            collected.artefacts[1].content,
            Content::Bundle { .. }
        ));
        assert!(
            unreadable(&collected.artefacts[2]).contains("not a JSON object"),
            "{}",
            unreadable(&collected.artefacts[2])
        );
    }

    #[tokio::test]
    async fn the_att_tag_is_not_read_when_attestations_are_not_wanted() {
        let mut fake = Fake::default();
        att_tag(&mut fake);
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert!(collected.is_empty());
        assert!(!collected.with_attestations);
        let att = cosign_tag(&subject(), "att");
        assert!(!running.asked(&format!("/v2/{REPO}/manifests/{att}")));
    }

    #[tokio::test]
    async fn bundle_and_notation_referrers_are_read_and_other_artifact_types_skipped() {
        let mut fake = Fake::default();
        let bundle = fake.referrer(
            artefact::BUNDLE_ARTIFACT_TYPE,
            artefact::BUNDLE_ARTIFACT_TYPE,
            &bundle_json(),
            json!({}),
        );
        let jws = fake.referrer(NOTATION_ARTIFACT_TYPE, JWS_MEDIA_TYPE, b"jws", json!({}));
        let cose = fake.referrer(NOTATION_ARTIFACT_TYPE, COSE_MEDIA_TYPE, b"cose", json!({}));
        let sbom = fake.referrer(
            "application/spdx+json",
            "application/spdx+json",
            b"{}",
            json!({}),
        );
        let sbom_digest = sbom["digest"].as_str().unwrap().to_owned();
        let mut untyped = sbom.clone();
        untyped.as_object_mut().unwrap().remove("artifactType");
        fake.referrers_api(&subject(), vec![sbom, bundle, untyped, jws, cose]);
        let running = serve(fake).await;
        let collected = collect_from(&running, with_attestations()).await.unwrap();
        assert_eq!(
            summary(&collected),
            [
                (Place::ReferrersApi, Format::SigstoreBundle),
                (Place::ReferrersApi, Format::NotationJws),
                (Place::ReferrersApi, Format::NotationCose),
            ]
        );
        assert!(
            matches!(collected.artefacts[0].content, Content::Bundle { .. }),
            "{:?}",
            collected.artefacts[0].content
        );
        match &collected.artefacts[2].content {
            Content::Notation {
                media_type,
                envelope,
            } => {
                assert_eq!(media_type, COSE_MEDIA_TYPE);
                assert_eq!(envelope, b"cose");
            }
            other => panic!("not a notation envelope: {other:?}"),
        }
        assert!(!running.asked(&format!("/v2/{REPO}/manifests/{sbom_digest}")));
    }

    /// Referrers: a bundle announcing SLSA provenance, one announcing Cosign's sign
    /// predicate, one announcing nothing.
    fn announced_bundles(fake: &mut Fake) -> (String, String, String) {
        let mut referrer = |annotations: Value, padding: usize| {
            // Distinct layers (trailing whitespace), so each referrer has its own digest.
            let mut bytes = bundle_json();
            bytes.extend(std::iter::repeat_n(b' ', padding));
            fake.referrer(
                artefact::BUNDLE_ARTIFACT_TYPE,
                artefact::BUNDLE_ARTIFACT_TYPE,
                &bytes,
                annotations,
            )
        };
        let slsa = referrer(json!({(PREDICATE_TYPE_ANNOTATION): SLSA}), 1);
        let sign = referrer(
            json!({(PREDICATE_TYPE_ANNOTATION): COSIGN_SIGN_PREDICATE}),
            2,
        );
        let plain = referrer(json!({}), 3);
        let digests = [&slsa, &sign, &plain].map(|d| d["digest"].as_str().unwrap().to_owned());
        fake.referrers_api(&subject(), vec![slsa, sign, plain]);
        let [a, b, c] = digests;
        (a, b, c)
    }

    #[tokio::test]
    async fn attestation_bundles_are_skipped_when_only_signatures_are_wanted() {
        let mut fake = Fake::default();
        let (slsa, sign, plain) = announced_bundles(&mut fake);
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        let read: Vec<&str> = collected
            .artefacts
            .iter()
            .map(|a| a.source_digest.as_str())
            .collect();
        assert_eq!(read, [sign.as_str(), plain.as_str()]);
        assert!(!running.asked(&format!("/v2/{REPO}/manifests/{slsa}")));
    }

    #[tokio::test]
    async fn attestation_bundles_are_read_when_attestations_are_wanted() {
        let mut fake = Fake::default();
        let (slsa, sign, plain) = announced_bundles(&mut fake);
        let running = serve(fake).await;
        let collected = collect_from(&running, with_attestations()).await.unwrap();
        let read: Vec<&str> = collected
            .artefacts
            .iter()
            .map(|a| a.source_digest.as_str())
            .collect();
        assert_eq!(read, [slsa.as_str(), sign.as_str(), plain.as_str()]);
    }

    #[tokio::test]
    async fn a_configured_signature_predicate_makes_its_bundles_signatures() {
        let mut fake = Fake::default();
        let (slsa, _, _) = announced_bundles(&mut fake);
        let running = serve(fake).await;
        let wanted = Wanted {
            attestations: false,
            signature_predicates: vec![SLSA.into()],
        };
        let collected = collect_from(&running, wanted).await.unwrap();
        assert_eq!(collected.artefacts.len(), 3);
        assert_eq!(collected.artefacts[0].source_digest, slsa);
    }

    #[tokio::test]
    async fn a_listed_referrer_whose_manifest_is_missing_is_unreadable() {
        let mut fake = Fake::default();
        let missing = sha(b"nowhere");
        fake.referrers_api(
            &subject(),
            vec![
                json!({"mediaType": OCI_MANIFEST, "digest": missing, "size": 2,
                        "artifactType": NOTATION_ARTIFACT_TYPE}),
            ],
        );
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert_eq!(
            summary(&collected),
            [(Place::ReferrersApi, Format::NotationJws)]
        );
        assert_eq!(collected.artefacts[0].source_digest, missing);
        assert_eq!(
            unreadable(&collected.artefacts[0]),
            "the referrer's manifest is listed but missing"
        );
    }

    #[tokio::test]
    async fn a_referrer_that_is_an_index_or_lacks_a_bundle_layer_is_unreadable() {
        let mut fake = Fake::default();
        let nested = index(vec![]);
        let nested_digest = sha(&nested);
        fake.put(
            format!("/v2/{REPO}/manifests/{nested_digest}"),
            200,
            OCI_INDEX_MEDIA_TYPE,
            nested.clone(),
        );
        let as_index = json!({"mediaType": OCI_INDEX_MEDIA_TYPE, "digest": nested_digest,
                              "size": nested.len(), "artifactType": artefact::BUNDLE_ARTIFACT_TYPE});
        let wrong_layer = fake.referrer(
            artefact::BUNDLE_ARTIFACT_TYPE,
            "application/json",
            &bundle_json(),
            json!({}),
        );
        let broken = fake.referrer(
            artefact::BUNDLE_ARTIFACT_TYPE,
            artefact::BUNDLE_ARTIFACT_TYPE,
            b"not json",
            json!({}),
        );
        fake.referrers_api(&subject(), vec![as_index, wrong_layer, broken]);
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        let reasons: Vec<&str> = collected.artefacts.iter().map(unreadable).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0], "the referrer is an index, not a manifest");
        assert_eq!(reasons[1], "the referrer has no bundle or envelope layer");
        assert!(
            reasons[2].starts_with("not a Sigstore bundle"),
            "{}",
            reasons[2]
        );
        assert!(
            collected
                .artefacts
                .iter()
                .all(|a| a.format == Format::SigstoreBundle)
        );
    }

    #[tokio::test]
    async fn without_the_referrers_api_the_referrers_tag_is_read() {
        let mut fake = Fake::default();
        let bundle = fake.referrer(
            artefact::BUNDLE_ARTIFACT_TYPE,
            artefact::BUNDLE_ARTIFACT_TYPE,
            &bundle_json(),
            json!({}),
        );
        fake.tag(
            &crate::registry::referrers_tag(&subject()),
            OCI_INDEX_MEDIA_TYPE,
            index(vec![bundle]),
        );
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert_eq!(
            summary(&collected),
            [(Place::ReferrersTagSchema, Format::SigstoreBundle)]
        );
    }

    #[tokio::test]
    async fn at_most_32_signature_referrers_are_read_and_the_rest_is_noted() {
        let mut fake = Fake::default();
        let bundle = fake.referrer(NOTATION_ARTIFACT_TYPE, JWS_MEDIA_TYPE, b"jws", json!({}));
        // Skipped referrers do not count toward the cap.
        let sbom = fake.referrer(
            "application/spdx+json",
            "application/spdx+json",
            b"{}",
            json!({}),
        );
        let mut listing = vec![sbom; 5];
        listing.extend(std::iter::repeat_n(bundle, MAX_ARTEFACTS + 1));
        fake.referrers_api(&subject(), listing);
        let running = serve(fake).await;
        let collected = collect_from(&running, signatures_only()).await.unwrap();
        assert_eq!(collected.artefacts.len(), MAX_ARTEFACTS);
        assert_eq!(
            collected.notes,
            ["more than 32 signature referrers; the rest were not read"]
        );
    }

    #[tokio::test]
    async fn a_registry_refusal_is_an_error_not_an_empty_result() {
        let mut fake = Fake::default();
        fake.put(
            format!("/v2/{REPO}/manifests/{}", cosign_tag(&subject(), "sig")),
            403,
            "text/plain",
            b"denied".to_vec(),
        );
        let running = serve(fake).await;
        let err = collect_from(&running, signatures_only()).await.unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    }
}
