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
    let (mut sig_tag, mut att_tag, mut listed) =
        (Collected::default(), Collected::default(), Collected::default());
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
