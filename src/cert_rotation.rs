//! Run-time rotation of the chart's self-managed certificate: `serve` looks at the TLS Secret
//! every hour and, once its certificate is within `--cert-renew-before` of expiry (or made for
//! other DNS names), issues a new CA and serving certificate, first adds the new CA to the
//! webhook configuration's `caBundle` (beside the CAs still in use), then writes the Secret.
//! In that order the API server trusts the new certificate before any pod serves it (the
//! kubelet refreshes the mounted Secret within about a minute; the server reloads the files).
//!
//! Every write is a replace carrying the `resourceVersion` that was read, so when several
//! replicas notice at once, one rotates and the others lose with 409 and look again later.
//! The bundle only grows by a CA and loses CAs that have expired, so a lost race can at most
//! leave one unused CA trusted until it expires. The decisions are pure
//! ([`assess`], [`merge_bundle`]); I/O goes through kube's typed APIs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clock::Clock;

/// The Secret annotations the chart reads with `lookup` on upgrade: kept current here, so an
/// upgrade after a run-time rotation reuses the new certificate.
pub const NOT_AFTER_ANNOTATION: &str = "portcullis.io/not-after";
pub const DNS_NAMES_ANNOTATION: &str = "portcullis.io/dns-names";
/// How often the Secret is looked at.
pub const CHECK_PERIOD: Duration = Duration::from_secs(3600);
/// After a failed or lost round, look again this soon.
pub const RETRY_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: kube::Error },
    #[error("cannot write {what}: {source}")]
    Write { what: String, source: kube::Error },
    #[error("{0} does not exist (is the chart installed with certificates.mode=selfManaged?)")]
    Missing(String),
    #[error("cannot generate the new certificate: {0}")]
    Generate(#[from] crate::tls::TlsError),
    #[error(
        "{0}: no DNS names to make a certificate for (pass --dns-name, or annotate the Secret \
         with portcullis.io/dns-names); not rotating"
    )]
    NoNames(String),
    #[error("the new certificate cannot be read back: {0}")]
    Parse(String),
}

/// What to rotate and how.
#[derive(Debug, Clone)]
pub struct RotationSettings {
    pub secret_namespace: String,
    pub secret_name: String,
    pub webhook_configuration: String,
    /// The digest-pinning MutatingWebhookConfiguration (same Service, same certificate), kept
    /// in step with the validating one when pinning is installed.
    pub mutating_webhook_configuration: Option<String>,
    /// Used when the Secret carries no `portcullis.io/dns-names` annotation.
    pub dns_names: Vec<String>,
    pub validity: Duration,
    pub renew_before: Duration,
}

/// Whether the Secret's certificate must be replaced now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Fresh { not_after: OffsetDateTime },
    Rotate { reason: String },
}

/// Pure: looks at the Secret's `tls.crt` (its first certificate) and its DNS-names annotation.
pub fn assess(
    secret: &Secret,
    dns_names: &[String],
    now: OffsetDateTime,
    renew_before: Duration,
) -> Assessment {
    let data = secret.data.clone().unwrap_or_default();
    let Some(cert) = data.get("tls.crt") else {
        return Assessment::Rotate {
            reason: "the Secret has no tls.crt".into(),
        };
    };
    let not_after = match certificates(&cert.0).first() {
        Some((_, not_after)) => *not_after,
        None => {
            return Assessment::Rotate {
                reason: "tls.crt holds no readable certificate".into(),
            };
        }
    };
    if !data.contains_key("tls.key") {
        return Assessment::Rotate {
            reason: "the Secret has no tls.key".into(),
        };
    }
    let annotated = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DNS_NAMES_ANNOTATION));
    if let Some(annotated) = annotated
        && !dns_names.is_empty()
        && *annotated != dns_names.join(",")
    {
        return Assessment::Rotate {
            reason: format!(
                "made for {annotated}, the webhook is now called {}",
                dns_names.join(",")
            ),
        };
    }
    let renew_at = not_after - renew_before;
    if now >= renew_at {
        return Assessment::Rotate {
            reason: format!(
                "expires {} (renewing {} before expiry)",
                rfc3339(not_after),
                humantime::format_duration(renew_before)
            ),
        };
    }
    Assessment::Fresh { not_after }
}

/// Pure: the CA bundle to trust after adding `new_ca`: the new CA first, then every other
/// distinct certificate of `existing` that has not expired.
pub fn merge_bundle(existing: &[&[u8]], new_ca: &str, now: OffsetDateTime) -> String {
    let mut bundle = vec![new_ca.trim().to_owned()];
    let mut seen: Vec<Vec<u8>> = certificates(new_ca.as_bytes())
        .into_iter()
        .map(|(der, _)| der)
        .collect();
    for pem in existing {
        for (block, (der, not_after)) in pem_blocks(pem).into_iter().zip(certificates(pem)) {
            if not_after > now && !seen.contains(&der) {
                seen.push(der);
                bundle.push(block);
            }
        }
    }
    let mut text = bundle.join("\n");
    text.push('\n');
    text
}

/// Each certificate of a PEM text as DER with its `notAfter`; unreadable blocks are skipped.
fn certificates(pem: &[u8]) -> Vec<(Vec<u8>, OffsetDateTime)> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let not_after = parsed.validity().not_after.to_datetime();
            Some((der.as_ref().to_vec(), not_after))
        })
        .collect()
}

/// The `BEGIN/END CERTIFICATE` blocks of a PEM text, in order (as [`certificates`] reads them).
fn pem_blocks(pem: &[u8]) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut blocks = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(length) = rest[start..].find(END) else {
            break;
        };
        let end = start + length + END.len();
        blocks.push(rest[start..end].to_owned());
        rest = &rest[end..];
    }
    blocks
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.replace_nanosecond(0)
        .unwrap_or(time)
        .format(&Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Fresh {
        not_after: OffsetDateTime,
    },
    Rotated {
        not_after: OffsetDateTime,
    },
    /// Another replica wrote first; look again soon.
    LostRace,
}

/// Looks at the Secret and rotates when [`assess`] says so.
pub struct CertRotator {
    secrets: Api<Secret>,
    webhooks: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
    settings: RotationSettings,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CertRotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRotator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CertRotator {
    pub fn new(client: kube::Client, settings: RotationSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &settings.secret_namespace),
            webhooks: Api::all(client.clone()),
            mutating: Api::all(client),
            settings,
            clock,
        }
    }

    fn secret_label(&self) -> String {
        format!(
            "Secret {}/{}",
            self.settings.secret_namespace, self.settings.secret_name
        )
    }

    fn webhook_label(&self) -> String {
        format!(
            "ValidatingWebhookConfiguration {}",
            self.settings.webhook_configuration
        )
    }

    /// One look at the Secret, and a rotation when it is due.
    pub async fn round(&self) -> Result<Round, RotationError> {
        let secret_label = self.secret_label();
        let mut secret = self
            .secrets
            .get_opt(&self.settings.secret_name)
            .await
            .map_err(|source| RotationError::Read {
                what: secret_label.clone(),
                source,
            })?
            .ok_or_else(|| RotationError::Missing(secret_label.clone()))?;
        let annotated: Vec<String> = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DNS_NAMES_ANNOTATION))
            .map(|names| names.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let dns_names = if self.settings.dns_names.is_empty() {
            annotated
        } else {
            self.settings.dns_names.clone()
        };
        if dns_names.is_empty() {
            return Err(RotationError::NoNames(secret_label));
        }
        let now = self.clock.now();
        let reason = match assess(&secret, &dns_names, now, self.settings.renew_before) {
            Assessment::Fresh { not_after } => return Ok(Round::Fresh { not_after }),
            Assessment::Rotate { reason } => reason,
        };
        tracing::info!(secret = %secret_label, %reason, "rotating the webhook certificate");

        let validity =
            time::Duration::try_from(self.settings.validity).unwrap_or(time::Duration::days(365));
        let generated = crate::tls::generate_valid_for(&dns_names, now, validity)?;
        let not_after = certificates(generated.cert_pem.as_bytes())
            .first()
            .map(|(_, not_after)| *not_after)
            .ok_or_else(|| RotationError::Parse("no certificate in the generated PEM".into()))?;

        // 1. Trust the new CA (beside every unexpired CA trusted now) before serving with it.
        let webhook_label = self.webhook_label();
        let mut webhook = self
            .webhooks
            .get_opt(&self.settings.webhook_configuration)
            .await
            .map_err(|source| RotationError::Read {
                what: webhook_label.clone(),
                source,
            })?
            .ok_or_else(|| RotationError::Missing(webhook_label.clone()))?;
        // The mutating (pinning) webhook calls the same Service with the same certificate, so
        // it must trust the new CA before it is served too.
        let mut mutating = match &self.settings.mutating_webhook_configuration {
            None => None,
            Some(name) => {
                let label = format!("MutatingWebhookConfiguration {name}");
                let found = self
                    .mutating
                    .get_opt(name)
                    .await
                    .map_err(|source| RotationError::Read {
                        what: label.clone(),
                        source,
                    })?
                    .ok_or_else(|| RotationError::Missing(label.clone()))?;
                Some((name.clone(), label, found))
            }
        };
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        let mut trusted: Vec<&[u8]> = webhook
            .webhooks
            .iter()
            .flatten()
            .filter_map(|w| w.client_config.ca_bundle.as_ref())
            .map(|b| b.0.as_slice())
            .collect();
        if let Some((_, _, found)) = &mutating {
            trusted.extend(
                found
                    .webhooks
                    .iter()
                    .flatten()
                    .filter_map(|w| w.client_config.ca_bundle.as_ref())
                    .map(|b| b.0.as_slice()),
            );
        }
        if let Some(ca) = data.get("ca.crt") {
            trusted.push(ca.0.as_slice());
        }
        let bundle = merge_bundle(&trusted, &generated.ca_pem, now);
        for entry in webhook.webhooks.iter_mut().flatten() {
            entry.client_config.ca_bundle = Some(ByteString(bundle.clone().into_bytes()));
        }
        match self
            .webhooks
            .replace(
                &self.settings.webhook_configuration,
                &PostParams::default(),
                &webhook,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(Round::LostRace),
            Err(source) => {
                return Err(RotationError::Write {
                    what: webhook_label,
                    source,
                });
            }
        }
        if let Some((name, label, found)) = &mut mutating {
            for entry in found.webhooks.iter_mut().flatten() {
                entry.client_config.ca_bundle = Some(ByteString(bundle.clone().into_bytes()));
            }
            // A lost race here leaves the new CA trusted beside the old ones (harmless: the
            // Secret is not rewritten), and the winner writes its own bundle.
            match self
                .mutating
                .replace(name, &PostParams::default(), found)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Ok(Round::LostRace);
                }
                Err(source) => {
                    return Err(RotationError::Write {
                        what: label.clone(),
                        source,
                    });
                }
            }
        }

        // 2. Serve with it.
        data.insert(
            "tls.crt".into(),
            ByteString(generated.cert_pem.into_bytes()),
        );
        data.insert("tls.key".into(), ByteString(generated.key_pem.into_bytes()));
        data.insert("ca.crt".into(), ByteString(bundle.into_bytes()));
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(NOT_AFTER_ANNOTATION.into(), rfc3339(not_after));
        annotations.insert(DNS_NAMES_ANNOTATION.into(), dns_names.join(","));
        match self
            .secrets
            .replace(&self.settings.secret_name, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    secret = %secret_label,
                    not_after = %rfc3339(not_after),
                    "rotated the webhook certificate"
                );
                Ok(Round::Rotated { not_after })
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Round::LostRace),
            Err(source) => Err(RotationError::Write {
                what: secret_label,
                source,
            }),
        }
    }
}

/// Runs [`CertRotator::round`] every [`CHECK_PERIOD`] (sooner again after a failure or a lost
/// race) until the task is aborted; counts each check's result in the metrics.
pub fn spawn(
    rotator: Arc<CertRotator>,
    state: Arc<crate::server::AppState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (result, wait) = match rotator.round().await {
                Ok(Round::Fresh { .. }) => ("fresh", CHECK_PERIOD),
                Ok(Round::Rotated { .. }) => ("rotated", CHECK_PERIOD),
                Ok(Round::LostRace) => ("lost-race", RETRY_PERIOD),
                Err(err) => {
                    tracing::error!(error = %err, "cannot check or rotate the webhook certificate");
                    ("failed", RETRY_PERIOD)
                }
            };
            state.metrics.record_certificate_check(result);
            tokio::time::sleep(wait).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::generate_valid_for;

    fn at(text: &str) -> OffsetDateTime {
        crate::timeutil::parse_instant(text).unwrap()
    }

    #[test]
    fn the_bundle_keeps_unexpired_distinct_cas_and_drops_expired_ones() {
        let now = at("2026-12-01T00:00:00Z");
        let names = ["portcullis.portcullis.svc".to_owned()];
        let expired = generate_valid_for(
            &names,
            at("2024-01-01T00:00:00Z"),
            time::Duration::days(365),
        )
        .unwrap();
        let current = generate_valid_for(
            &names,
            at("2026-01-01T00:00:00Z"),
            time::Duration::days(365),
        )
        .unwrap();
        let new = generate_valid_for(&names, now, time::Duration::days(365)).unwrap();
        let existing = format!("{}{}", expired.ca_pem, current.ca_pem);
        let merged = merge_bundle(
            &[existing.as_bytes(), current.ca_pem.as_bytes()],
            &new.ca_pem,
            now,
        );
        assert_eq!(certificates(merged.as_bytes()).len(), 2, "{merged}");
        assert!(merged.starts_with(new.ca_pem.trim()));
        assert!(merged.contains(current.ca_pem.trim()));
        assert!(!merged.contains(expired.ca_pem.trim()));
    }

    #[test]
    fn rotation_is_due_inside_the_renewal_window_or_for_other_names() {
        let names = vec!["a.svc".to_owned()];
        let made = generate_valid_for(
            &names,
            at("2026-01-01T00:00:00Z"),
            time::Duration::days(365),
        )
        .unwrap();
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tls", "annotations": {DNS_NAMES_ANNOTATION: "a.svc"}},
            "data": {
                "tls.crt": base64_of(&made.cert_pem),
                "tls.key": base64_of(&made.key_pem),
            }
        }))
        .unwrap();
        let month = Duration::from_secs(30 * 86_400);
        assert!(matches!(
            assess(&secret, &names, at("2026-11-30T00:00:00Z"), month),
            Assessment::Fresh { .. }
        ));
        assert!(matches!(
            assess(&secret, &names, at("2026-12-03T00:00:00Z"), month),
            Assessment::Rotate { .. }
        ));
        let Assessment::Rotate { reason } = assess(
            &secret,
            &["b.svc".to_owned()],
            at("2026-06-01T00:00:00Z"),
            month,
        ) else {
            panic!("other names must rotate");
        };
        assert!(
            reason.contains("a.svc") && reason.contains("b.svc"),
            "{reason}"
        );
        let empty = Secret::default();
        assert!(matches!(
            assess(&empty, &names, at("2026-06-01T00:00:00Z"), month),
            Assessment::Rotate { .. }
        ));
    }

    fn base64_of(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    }
}
