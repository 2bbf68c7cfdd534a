//! The Notation section of an image policy (`imagePolicies[].signatures.notation`) and its
//! compiled form: trust stores read and checked, trusted identities parsed. Verifying an
//! envelope against a [`NotationTrust`] is the evidence layer's (`portcullis_evidence::notation`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;

/// A Notation section that cannot be used: a trust store unreadable or not certificates, an
/// identity that does not parse, an unsupported verification level.
#[derive(Debug, thiserror::Error)]
pub enum NotationTrustError {
    #[error("notation trust store {file}: {source}")]
    ReadTrustStore {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("notation {key} {what}: not PEM certificates: {message}")]
    BadPem {
        key: &'static str,
        what: String,
        message: String,
    },
    #[error("notation {key} {what}: holds no certificate")]
    EmptyPem { key: &'static str, what: String },
    #[error("notation {key} {what}: certificate #{index} is unusable as a trust anchor: {message}")]
    BadAnchor {
        key: &'static str,
        what: String,
        index: usize,
        message: String,
    },
    #[error("notation.{key}: {message}")]
    Config { key: &'static str, message: String },
}

/// Where a trust-store certificate comes from: a PEM file's path, or PEM text inline.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CertSource {
    Path(PathBuf),
    Inline(InlinePem),
}

/// PEM text written in the configuration itself: `{pem: "-----BEGIN CERTIFICATE-----..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InlinePem {
    pub pem: String,
}

/// `imagePolicies[].signatures.notation`: what a Notation signature must satisfy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotationRequirement {
    /// Root (or intermediate) CA certificates a signing chain must lead to.
    pub trust_store: Vec<CertSource>,
    /// `x509.subject: C=.., ST=.., O=..` entries, or the single entry `*`.
    pub trusted_identities: Vec<String>,
    /// TSA roots; when set, an RFC 3161 timestamp countersignature is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tsa_trust_store: Vec<CertSource>,
    /// Only `strict`, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_verification: Option<String>,
}

/// One attribute of a distinguished name: upper-case type name (`ST` for `S`) and value.
pub type DnSet = BTreeMap<String, String>;

/// The compiled trusted identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustedIdentities {
    /// `*`: any leaf that chains to the trust store.
    Any,
    /// Each is a set of subject attributes the leaf subject must all carry.
    Subjects(Vec<DnSet>),
}

/// A [`NotationRequirement`] with its files read and checked: what [`verify`] needs.
#[derive(Clone)]
pub struct NotationTrust {
    roots: Vec<CertificateDer<'static>>,
    tsa_roots: Vec<CertificateDer<'static>>,
    identities: TrustedIdentities,
    fingerprint: String,
}

impl fmt::Debug for NotationTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotationTrust")
            .field("roots", &self.roots.len())
            .field("tsa_roots", &self.tsa_roots.len())
            .field("identities", &self.identities)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl NotationRequirement {
    /// Reads the trust stores now and checks the identities; relative paths are taken from the
    /// process's working directory.
    pub fn compile(&self) -> Result<NotationTrust, NotationTrustError> {
        match self.signature_verification.as_deref() {
            None | Some("strict") => {}
            Some(other) => {
                return Err(NotationTrustError::Config {
                    key: "signatureVerification",
                    message: format!(
                        "{other:?} is not supported; portcullis enforces every Notary Project \
                         validation, so only \"strict\" is accepted"
                    ),
                });
            }
        }
        if self.trust_store.is_empty() {
            return Err(NotationTrustError::Config {
                key: "trustStore",
                message: "lists no certificate".to_string(),
            });
        }
        let roots = load_certs("trustStore", &self.trust_store)?;
        let tsa_roots = load_certs("tsaTrustStore", &self.tsa_trust_store)?;
        let identities = compile_identities(&self.trusted_identities)?;
        let fingerprint = fingerprint_of(&roots, &tsa_roots, &identities);
        Ok(NotationTrust {
            roots,
            tsa_roots,
            identities,
            fingerprint,
        })
    }

    /// The same as [`NotationRequirement::compile`].
    pub fn load(&self) -> Result<NotationTrust, NotationTrustError> {
        self.compile()
    }
}

impl NotationTrust {
    /// Trust in these roots, TSA roots and identities (certificates already checked).
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        tsa_roots: Vec<CertificateDer<'static>>,
        identities: TrustedIdentities,
    ) -> Self {
        let fingerprint = fingerprint_of(&roots, &tsa_roots, &identities);
        Self {
            roots,
            tsa_roots,
            identities,
            fingerprint,
        }
    }

    /// The trust-store certificates a signing chain must lead to.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The TSA roots (empty: no timestamp required).
    pub fn tsa_roots(&self) -> &[CertificateDer<'static>] {
        &self.tsa_roots
    }

    /// `sha256:<hex>` over the trust-store certificates, the TSA certificates and the identities:
    /// it changes whenever a key is rotated or an identity edited.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn identities(&self) -> &TrustedIdentities {
        &self.identities
    }

    /// Whether an RFC 3161 timestamp countersignature is required (a TSA trust store is set).
    pub fn requires_timestamp(&self) -> bool {
        !self.tsa_roots.is_empty()
    }
}

fn fingerprint_of(
    roots: &[CertificateDer<'static>],
    tsa_roots: &[CertificateDer<'static>],
    identities: &TrustedIdentities,
) -> String {
    let mut hasher = Sha256::new();
    for (tag, certs) in [(b"ca\0", roots), (b"tsa", tsa_roots)] {
        hasher.update(tag);
        hasher.update((certs.len() as u64).to_be_bytes());
        for cert in certs {
            hasher.update((cert.len() as u64).to_be_bytes());
            hasher.update(cert.as_ref());
        }
    }
    hasher.update(b"ids");
    match identities {
        TrustedIdentities::Any => hasher.update(b"*"),
        TrustedIdentities::Subjects(sets) => {
            for set in sets {
                for (k, v) in set {
                    hasher.update((k.len() as u64).to_be_bytes());
                    hasher.update(k.as_bytes());
                    hasher.update((v.len() as u64).to_be_bytes());
                    hasher.update(v.as_bytes());
                }
                hasher.update(b"\0set");
            }
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn load_certs(
    key: &'static str,
    sources: &[CertSource],
) -> Result<Vec<CertificateDer<'static>>, NotationTrustError> {
    let mut out = Vec::new();
    for source in sources {
        let (what, bytes) = match source {
            CertSource::Path(path) => {
                let bytes =
                    std::fs::read(path).map_err(|source| NotationTrustError::ReadTrustStore {
                        file: path.display().to_string(),
                        source,
                    })?;
                (path.display().to_string(), bytes)
            }
            CertSource::Inline(inline) => {
                ("inline pem".to_string(), inline.pem.as_bytes().to_vec())
            }
        };
        let mut found = 0usize;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|err| NotationTrustError::BadPem {
                key,
                what: what.clone(),
                message: err.to_string(),
            })?;
            found += 1;
            webpki::anchor_from_trusted_cert(&cert).map_err(|err| {
                NotationTrustError::BadAnchor {
                    key,
                    what: what.clone(),
                    index: found,
                    message: err.to_string(),
                }
            })?;
            out.push(cert.into_owned());
        }
        if found == 0 {
            return Err(NotationTrustError::EmptyPem { key, what });
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Trusted identities: `x509.subject:` distinguished names, matched as sets of attributes.
// ------------------------------------------------------------------------------------------

const X509_SUBJECT_PREFIX: &str = "x509.subject:";

fn compile_identities(entries: &[String]) -> Result<TrustedIdentities, NotationTrustError> {
    let err = |message: String| NotationTrustError::Config {
        key: "trustedIdentities",
        message,
    };
    if entries.is_empty() {
        return Err(err(
            "lists no identity; write [\"*\"] to trust any signer of the trust store".to_string(),
        ));
    }
    if entries.iter().any(|e| e.trim() == "*") {
        if entries.len() != 1 {
            return Err(err("\"*\" must be the only entry".to_string()));
        }
        return Ok(TrustedIdentities::Any);
    }
    let mut sets = Vec::new();
    for entry in entries {
        let trimmed = entry.trim_start();
        let Some(dn) = trimmed.strip_prefix(X509_SUBJECT_PREFIX) else {
            return Err(err(format!(
                "{entry:?} does not start with \"x509.subject:\" (nor is it \"*\")"
            )));
        };
        let set = parse_dn(dn).map_err(|message| err(format!("{entry:?}: {message}")))?;
        for required in ["C", "ST", "O"] {
            if !set.contains_key(required) {
                return Err(err(format!(
                    "{entry:?} lacks {required}: every identity names at least C, ST (or S) and O"
                )));
            }
        }
        sets.push(set);
    }
    for (i, a) in sets.iter().enumerate() {
        for b in sets.iter().skip(i + 1) {
            if overlapping(a, b) {
                return Err(err(format!(
                    "{} and {} overlap: one certificate could match both",
                    render_dn(a),
                    render_dn(b)
                )));
            }
        }
    }
    Ok(TrustedIdentities::Subjects(sets))
}

/// Two identities overlap when some subject could satisfy both: no attribute type they share
/// has different values.
fn overlapping(a: &DnSet, b: &DnSet) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

fn render_dn(set: &DnSet) -> String {
    let parts: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("x509.subject: {}", parts.join(", "))
}

fn normalise_attr_type(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.as_str() {
        "S" => "ST".to_string(),
        _ => upper,
    }
}

/// Parses `C=US, ST=WA, O=acme\, inc` into a set of attributes. RDN separators are `,`, `;`
/// and (multi-valued RDNs) `+`; `\` escapes the next character, or two hex digits give one
/// byte. Unescaped spaces around types and values are dropped; a repeated type is an error.
pub fn parse_dn(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut set = DnSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0usize;
    loop {
        let mut name = String::new();
        while i < chars.len() && chars[i] != '=' {
            if matches!(chars[i], ',' | ';' | '+' | '\\') {
                return Err(format!(
                    "attribute type {:?} is cut short by {:?}",
                    name.trim(),
                    chars[i]
                ));
            }
            name.push(chars[i]);
            i += 1;
        }
        if i >= chars.len() {
            if name.trim().is_empty() && set.is_empty() {
                return Err("names no attribute".to_string());
            }
            return Err(format!("{:?} has no '='", name.trim()));
        }
        i += 1; // '='
        let name = normalise_attr_type(&name);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("{name:?} is not an attribute type"));
        }
        // The value, as bytes (so that \XX escapes can build UTF-8), each marked escaped or not.
        let mut value: Vec<(u8, bool)> = Vec::new();
        while i < chars.len() && !matches!(chars[i], ',' | ';' | '+') {
            let mut buf = [0u8; 4];
            if chars[i] == '\\' {
                let hex_pair = chars
                    .get(i + 1..i + 3)
                    .filter(|pair| pair.iter().all(|c| c.is_ascii_hexdigit()));
                if let Some(pair) = hex_pair {
                    let digits: String = pair.iter().collect();
                    let byte = u8::from_str_radix(&digits, 16).map_err(|e| e.to_string())?;
                    value.push((byte, true));
                    i += 3;
                } else if let Some(&c) = chars.get(i + 1) {
                    value.extend(c.encode_utf8(&mut buf).bytes().map(|b| (b, true)));
                    i += 2;
                } else {
                    return Err(format!("the value of {name} ends in a lone '\\'"));
                }
            } else {
                value.extend(chars[i].encode_utf8(&mut buf).bytes().map(|b| (b, false)));
                i += 1;
            }
        }
        let is_plain_space = |&(b, escaped): &(u8, bool)| b == b' ' && !escaped;
        let start = value
            .iter()
            .position(|c| !is_plain_space(c))
            .unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|c| !is_plain_space(c))
            .map_or(start, |p| p + 1);
        let bytes: Vec<u8> = value
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|&(b, _)| b)
            .collect();
        let value =
            String::from_utf8(bytes).map_err(|_| format!("the value of {name} is not UTF-8"))?;
        if value.is_empty() {
            return Err(format!("{name} has an empty value"));
        }
        if set.insert(name.clone(), value).is_some() {
            return Err(format!("{name} appears twice"));
        }
        if i >= chars.len() {
            break;
        }
        i += 1; // separator
    }
    Ok(set)
}

/// The attributes of a certificate subject, keyed like trusted identities. Fails on a repeated
/// attribute type or a value that is not a string.
pub fn subject_set(cert: &X509Certificate<'_>) -> Result<DnSet, String> {
    let mut set = DnSet::new();
    for attr in cert.subject().iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        let name = match oid.as_str() {
            "2.5.4.6" => "C",
            "2.5.4.8" => "ST",
            "2.5.4.7" => "L",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.3" => "CN",
            "2.5.4.9" => "STREET",
            "2.5.4.17" => "POSTALCODE",
            "2.5.4.5" => "SERIALNUMBER",
            "1.2.840.113549.1.9.1" => "EMAILADDRESS",
            "0.9.2342.19200300.100.1.25" => "DC",
            "0.9.2342.19200300.100.1.1" => "UID",
            other => other,
        }
        .to_string();
        let value = attr
            .as_str()
            .map_err(|_| format!("subject attribute {name} is not a string"))?;
        if set.insert(name.clone(), value.to_string()).is_some() {
            return Err(format!(
                "subject repeats {name}, which trusted identities cannot match"
            ));
        }
    }
    Ok(set)
}

pub fn identity_matches(identities: &TrustedIdentities, subject: &DnSet) -> bool {
    match identities {
        TrustedIdentities::Any => true,
        TrustedIdentities::Subjects(sets) => sets
            .iter()
            .any(|want| want.iter().all(|(k, v)| subject.get(k) == Some(v))),
    }
}

// ------------------------------------------------------------------------------------------
// Envelopes
// ------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> DnSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dn_parses_as_a_set_with_s_as_st() {
        let dn = parse_dn(" C=US, S=WA ,O=example, CN=signer ").unwrap();
        assert_eq!(
            dn,
            set(&[
                ("C", "US"),
                ("ST", "WA"),
                ("O", "example"),
                ("CN", "signer")
            ])
        );
        assert_eq!(
            parse_dn("c=US;st=WA+o=x").unwrap(),
            set(&[("C", "US"), ("ST", "WA"), ("O", "x")])
        );
    }

    #[test]
    fn dn_escapes() {
        let dn =
            parse_dn(r"C=US, ST=WA, O=acme\, inc\; ltd, OU=back\\slash, CN=\ padded\ ").unwrap();
        assert_eq!(dn["O"], "acme, inc; ltd");
        assert_eq!(dn["OU"], r"back\slash");
        assert_eq!(dn["CN"], " padded ");
        assert_eq!(parse_dn(r"C=US, ST=WA, O=\41BC").unwrap()["O"], "ABC");
        assert!(parse_dn(r"C=US, O=trailing\").is_err());
    }

    #[test]
    fn dn_refuses_nonsense() {
        assert!(parse_dn("").is_err());
        assert!(parse_dn("C=US, ST").is_err());
        assert!(parse_dn("C=US, ST=").is_err());
        assert!(parse_dn("C=US, C=CA").is_err());
        assert!(parse_dn("C=US, S=WA, ST=WA").is_err());
        assert!(parse_dn("C US=x").is_err());
    }

    fn ids(entries: &[&str]) -> Result<TrustedIdentities, NotationTrustError> {
        compile_identities(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn identities_compile_per_the_trust_policy_rules() {
        assert_eq!(ids(&["*"]).unwrap(), TrustedIdentities::Any);
        assert!(ids(&["*", "x509.subject: C=US, ST=WA, O=x"]).is_err());
        assert!(ids(&[]).is_err());
        // C, ST (or S) and O are required.
        assert!(ids(&["x509.subject: C=US, O=x"]).is_err());
        assert!(ids(&["x509.subject: C=US, S=WA, O=x"]).is_ok());
        assert!(ids(&["C=US, ST=WA, O=x"]).is_err());
        // Overlapping identities are a policy error.
        let err = ids(&[
            "x509.subject: C=US, ST=WA, O=wabbit-network.io, OU=org1",
            "x509.subject:  C=US, ST=WA, O=wabbit-network.io",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        assert!(
            ids(&[
                "x509.subject: C=US, ST=WA, O=x, CN=a",
                "x509.subject: C=US, ST=WA, O=x, CN=b",
            ])
            .is_ok()
        );
    }

    #[test]
    fn identity_matching_is_an_order_insensitive_subset() {
        let trusted = ids(&["x509.subject: O=example, ST=WA, C=US"]).unwrap();
        let subject = set(&[
            ("C", "US"),
            ("ST", "WA"),
            ("L", "Seattle"),
            ("O", "example"),
            ("CN", "s"),
        ]);
        assert!(identity_matches(&trusted, &subject));
        let other = set(&[("C", "US"), ("ST", "WA"), ("O", "Example")]);
        assert!(
            !identity_matches(&trusted, &other),
            "values compare exactly"
        );
        let missing = set(&[("C", "US"), ("O", "example")]);
        assert!(!identity_matches(&trusted, &missing));
        assert!(identity_matches(&TrustedIdentities::Any, &missing));
    }

    #[test]
    fn requirement_is_camel_case_and_strict() {
        let req: NotationRequirement = serde_json::from_str(
            r#"{"trustStore": ["/etc/ca.pem", {"pem": "x"}], "trustedIdentities": ["*"],
                "tsaTrustStore": ["/etc/tsa.pem"], "signatureVerification": "strict"}"#,
        )
        .unwrap();
        assert_eq!(req.trust_store.len(), 2);
        assert!(matches!(req.trust_store[1], CertSource::Inline(_)));
        assert!(
            serde_json::from_str::<NotationRequirement>(
                r#"{"trustStore": [], "trustedIdentities": ["*"], "trustStores": []}"#
            )
            .is_err()
        );
        let permissive = NotationRequirement {
            signature_verification: Some("permissive".to_string()),
            ..req.clone()
        };
        let err = permissive.compile().unwrap_err();
        assert!(err.to_string().contains("signatureVerification"), "{err}");
        let missing = NotationRequirement {
            trust_store: vec![CertSource::Path("/nonexistent/ca.pem".into())],
            ..req.clone()
        };
        let err = missing.compile().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let not_pem = NotationRequirement {
            trust_store: vec![CertSource::Inline(InlinePem {
                pem: "x".to_string(),
            })],
            ..req
        };
        assert!(matches!(
            not_pem.compile().unwrap_err(),
            NotationTrustError::EmptyPem { .. }
        ));
    }

    #[test]
    fn fingerprint_covers_identities() {
        let a = fingerprint_of(&[], &[], &TrustedIdentities::Any);
        let b = fingerprint_of(&[], &[], &ids(&["x509.subject: C=US, ST=WA, O=x"]).unwrap());
        let c = fingerprint_of(
            &[CertificateDer::from(vec![1u8, 2, 3])],
            &[],
            &TrustedIdentities::Any,
        );
        assert!(a.starts_with("sha256:"));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
