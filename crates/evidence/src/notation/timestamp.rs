//! RFC 3161 timestamp countersignatures (`io.cncf.notary.timestampSignature`): a CMS SignedData
//! whose content is a TSTInfo, checked as the Notary Project trust policy's "Validate Authentic
//! Timestamp" step says: integrity of the CMS signature over the signed attributes, the
//! `messageDigest` over the TSTInfo, `signing-certificate-v2` naming the TSA certificate, the
//! TSA certificate's requirements, its chain to the TSA trust store (EKU timeStamping), and the
//! message imprint being the hash of the envelope's signature. The result is the time range
//! `genTime ± accuracy`.
//!
//! A small DER reader is used instead of a CMS crate: only definite-length DER is accepted.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256, Sha384, Sha512};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::{NotationError, Role, check_requirements, verify_path};

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SIGNING_CERT_V2: &str = "1.2.840.113549.1.9.16.2.47";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";
const OID_BASELINE_POLICY: &str = "0.4.0.2023.1.1";
/// id-kp-timeStamping, 1.3.6.1.5.5.7.3.8.
const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// Tokens larger than this are refused.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// What a verified timestamp says.
pub(super) struct Stamped {
    pub gen_time: OffsetDateTime,
    pub lower: SystemTime,
    pub upper: SystemTime,
}

fn fail(message: impl Into<String>) -> NotationError {
    NotationError::Timestamp(message.into())
}

/// One DER element.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    raw: &'a [u8],
}

fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), NotationError> {
    let tag = *input.first().ok_or_else(|| fail("truncated DER"))?;
    if tag & 0x1f == 0x1f {
        return Err(fail("high-numbered DER tags are not expected"));
    }
    let first = *input.get(1).ok_or_else(|| fail("truncated DER length"))?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(fail("not DER: indefinite or oversized length"));
        }
        let bytes = input
            .get(2..2 + n)
            .ok_or_else(|| fail("truncated DER length"))?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    let end = header
        .checked_add(len)
        .ok_or_else(|| fail("DER length overflows"))?;
    let value = input
        .get(header..end)
        .ok_or_else(|| fail("truncated DER value"))?;
    let raw = input
        .get(..end)
        .ok_or_else(|| fail("truncated DER value"))?;
    let rest = input.get(end..).unwrap_or_default();
    Ok((Tlv { tag, value, raw }, rest))
}

fn children(value: &[u8]) -> Result<Vec<Tlv<'_>>, NotationError> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (tlv, next) = read_tlv(rest)?;
        out.push(tlv);
        rest = next;
    }
    Ok(out)
}

fn expect<'a>(tlv: Option<&Tlv<'a>>, tag: u8, what: &str) -> Result<Tlv<'a>, NotationError> {
    match tlv {
        Some(t) if t.tag == tag => Ok(*t),
        Some(t) => Err(fail(format!(
            "{what}: tag 0x{:02x}, expected 0x{tag:02x}",
            t.tag
        ))),
        None => Err(fail(format!("{what} is missing"))),
    }
}

fn oid_string(tlv: &Tlv<'_>) -> Result<String, NotationError> {
    if tlv.tag != 0x06 {
        return Err(fail("an OID was expected"));
    }
    Ok(x509_parser::der_parser::oid::Oid::new(tlv.value.into()).to_id_string())
}

/// The OID of an AlgorithmIdentifier SEQUENCE.
fn alg_oid(tlv: &Tlv<'_>) -> Result<String, NotationError> {
    let parts = children(expect(Some(tlv), 0x30, "AlgorithmIdentifier")?.value)?;
    oid_string(
        parts
            .first()
            .ok_or_else(|| fail("empty AlgorithmIdentifier"))?,
    )
}

fn digest(oid: &str, data: &[u8]) -> Result<Vec<u8>, NotationError> {
    Ok(match oid {
        OID_SHA256 => Sha256::digest(data).to_vec(),
        OID_SHA384 => Sha384::digest(data).to_vec(),
        OID_SHA512 => Sha512::digest(data).to_vec(),
        other => {
            return Err(fail(format!(
                "hash algorithm {other} is not SHA-256/384/512"
            )));
        }
    })
}

/// GeneralizedTime `YYYYMMDDHHMMSS[.f+]Z`.
fn generalized_time(tlv: &Tlv<'_>) -> Result<(OffsetDateTime, Duration), NotationError> {
    if tlv.tag != 0x18 {
        return Err(fail("genTime is not a GeneralizedTime"));
    }
    let text = std::str::from_utf8(tlv.value).map_err(|_| fail("genTime is not ASCII"))?;
    let body = text
        .strip_suffix('Z')
        .ok_or_else(|| fail("genTime is not in UTC"))?;
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(format!("genTime {text:?} is malformed")));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(format!("genTime {text:?} is malformed")));
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, NotationError> {
        whole
            .get(r)
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| fail(format!("genTime {text:?} is malformed")))
    };
    let year = i32::try_from(num(0..4)?).map_err(|_| fail("genTime year"))?;
    let month = time::Month::try_from(u8::try_from(num(4..6)?).map_err(|_| fail("genTime month"))?)
        .map_err(|e| fail(format!("genTime month: {e}")))?;
    let small = |v: u32| u8::try_from(v).map_err(|_| fail("genTime field out of range"));
    let date = time::Date::from_calendar_date(year, month, small(num(6..8)?)?)
        .map_err(|e| fail(format!("genTime date: {e}")))?;
    let time = time::Time::from_hms(
        small(num(8..10)?)?,
        small(num(10..12)?)?,
        small(num(12..14)?)?,
    )
    .map_err(|e| fail(format!("genTime time: {e}")))?;
    let mut nanos = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Ok((
        time::PrimitiveDateTime::new(date, time).assume_utc(),
        Duration::from_nanos(u64::from(nanos)),
    ))
}

fn small_uint(value: &[u8]) -> Result<u64, NotationError> {
    if value.is_empty() || value.len() > 8 || value.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(fail("accuracy is not a small non-negative integer"));
    }
    Ok(value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Accuracy ::= SEQUENCE { seconds INTEGER OPTIONAL, millis [0] INTEGER OPTIONAL,
/// micros [1] INTEGER OPTIONAL }.
fn accuracy(tlv: &Tlv<'_>) -> Result<Duration, NotationError> {
    let mut total = Duration::ZERO;
    for part in children(tlv.value)? {
        let n = small_uint(part.value)?;
        total += match part.tag {
            0x02 => Duration::from_secs(n),
            0x80 if n <= 999 => Duration::from_millis(n),
            0x81 if n <= 999 => Duration::from_micros(n),
            _ => return Err(fail("accuracy has an unexpected field")),
        };
    }
    Ok(total)
}

/// Verifies `token` as a countersignature of `signature` (the envelope's signature bytes).
pub(super) fn verify_token(
    token: &[u8],
    signature: &[u8],
    tsa_roots: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<Stamped, NotationError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(fail(format!(
            "token of {} bytes is over {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    // ContentInfo
    let (content_info, trailing) = read_tlv(token)?;
    if !trailing.is_empty() || content_info.tag != 0x30 {
        return Err(fail("is not a DER ContentInfo"));
    }
    let ci = children(content_info.value)?;
    if oid_string(&expect(ci.first(), 0x06, "contentType")?)? != OID_SIGNED_DATA {
        return Err(fail("is not a CMS SignedData"));
    }
    let explicit = expect(ci.get(1), 0xa0, "content")?;
    let (signed_data, _) = read_tlv(explicit.value)?;
    let sd = children(expect(Some(&signed_data), 0x30, "SignedData")?.value)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls, signerInfos
    let encap = children(expect(sd.get(2), 0x30, "encapContentInfo")?.value)?;
    if oid_string(&expect(encap.first(), 0x06, "eContentType")?)? != OID_TST_INFO {
        return Err(fail("the signed content is not a TSTInfo"));
    }
    let econtent_explicit = expect(encap.get(1), 0xa0, "eContent")?;
    let (econtent, _) = read_tlv(econtent_explicit.value)?;
    let tst_der = expect(Some(&econtent), 0x04, "eContent")?.value;
    let mut certs_der: Vec<&[u8]> = Vec::new();
    let mut signer_infos = None;
    for part in sd.iter().skip(3) {
        match part.tag {
            0xa0 => {
                for c in children(part.value)? {
                    if c.tag == 0x30 {
                        certs_der.push(c.raw);
                    }
                }
            }
            0xa1 => {}
            0x31 => signer_infos = Some(children(part.value)?),
            _ => return Err(fail("SignedData has an unexpected field")),
        }
    }
    let signer_infos = signer_infos.ok_or_else(|| fail("SignedData has no signerInfos"))?;
    let [signer_info] = signer_infos.as_slice() else {
        return Err(fail(format!(
            "{} signers; a timestamp has exactly one",
            signer_infos.len()
        )));
    };
    if certs_der.len() > super::MAX_CHAIN_CERTS {
        return Err(fail("too many certificates"));
    }
    let certs = certs_der
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| fail(format!("a certificate is unreadable: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // SignerInfo
    let si = children(expect(Some(signer_info), 0x30, "SignerInfo")?.value)?;
    let sid = si.get(1).ok_or_else(|| fail("SignerInfo has no sid"))?;
    let digest_alg = alg_oid(
        si.get(2)
            .ok_or_else(|| fail("SignerInfo has no digestAlgorithm"))?,
    )?;
    let signed_attrs = expect(si.get(3), 0xa0, "signedAttrs")?;
    let sig_alg_tlv = expect(si.get(4), 0x30, "signatureAlgorithm")?;
    let sig_alg = alg_oid(&sig_alg_tlv)?;
    let cms_signature = expect(si.get(5), 0x04, "signature")?.value;

    let signer_index = certs
        .iter()
        .position(|c| sid_matches(sid, c))
        .ok_or_else(|| fail("the signer's certificate is not in the token"))?;
    let signer = certs
        .get(signer_index)
        .ok_or_else(|| fail("the signer's certificate is not in the token"))?;

    // Signed attributes: contentType, messageDigest, signingCertificateV2.
    let mut content_type_ok = false;
    let mut message_digest = None;
    let mut signing_cert_v2 = None;
    for attr in children(signed_attrs.value)? {
        let parts = children(expect(Some(&attr), 0x30, "Attribute")?.value)?;
        let oid = oid_string(&expect(parts.first(), 0x06, "attrType")?)?;
        let values = children(expect(parts.get(1), 0x31, "attrValues")?.value)?;
        let [value] = values.as_slice() else {
            return Err(fail(format!("attribute {oid} must have exactly one value")));
        };
        match oid.as_str() {
            OID_CONTENT_TYPE => content_type_ok = oid_string(value)? == OID_TST_INFO,
            OID_MESSAGE_DIGEST => {
                message_digest = Some(expect(Some(value), 0x04, "messageDigest")?.value)
            }
            OID_SIGNING_CERT_V2 => signing_cert_v2 = Some(*value),
            _ => {}
        }
    }
    if !content_type_ok {
        return Err(fail("the contentType attribute is missing or not TSTInfo"));
    }
    let message_digest =
        message_digest.ok_or_else(|| fail("the messageDigest attribute is missing"))?;
    if digest(&digest_alg, tst_der)? != message_digest {
        return Err(fail("messageDigest does not match the TSTInfo"));
    }
    let signing_cert_v2 =
        signing_cert_v2.ok_or_else(|| fail("the signing-certificate-v2 attribute is missing"))?;
    check_signing_certificate_v2(
        &signing_cert_v2,
        certs_der.get(signer_index).copied().unwrap_or_default(),
    )?;

    // CMS signature over the DER of the signed attributes as a SET OF.
    let mut to_verify = signed_attrs.raw.to_vec();
    if let Some(first) = to_verify.first_mut() {
        *first = 0x31;
    }
    verify_cms_signature(signer, &sig_alg, &digest_alg, &to_verify, cms_signature)?;

    // TSTInfo
    let (tst, _) = read_tlv(tst_der)?;
    let tst = children(expect(Some(&tst), 0x30, "TSTInfo")?.value)?;
    let policy = oid_string(&expect(tst.get(1), 0x06, "policy")?)?;
    let imprint = children(expect(tst.get(2), 0x30, "messageImprint")?.value)?;
    let imprint_alg = alg_oid(
        imprint
            .first()
            .ok_or_else(|| fail("messageImprint is empty"))?,
    )?;
    let hashed = expect(imprint.get(1), 0x04, "hashedMessage")?.value;
    if digest(&imprint_alg, signature)? != hashed {
        return Err(fail(
            "its message imprint is not the hash of this signature",
        ));
    }
    let (gen_time, frac) = generalized_time(&expect(tst.get(4), 0x18, "genTime")?)?;
    let acc = match tst.get(5) {
        Some(t) if t.tag == 0x30 => accuracy(t)?,
        _ if policy == OID_BASELINE_POLICY => Duration::from_secs(1),
        _ => Duration::ZERO,
    };
    let gen_system = SystemTime::from(gen_time) + frac;
    let lower = gen_system
        .checked_sub(acc)
        .ok_or_else(|| fail("genTime is out of range"))?;
    let upper = gen_system + acc;
    if lower > now {
        return Err(fail("genTime is in the future"));
    }

    // The TSA certificate: requirements and chain to the TSA trust store at genTime.
    let mut chain: Vec<Vec<u8>> = vec![
        certs_der
            .get(signer_index)
            .copied()
            .unwrap_or_default()
            .to_vec(),
    ];
    chain.extend(
        certs_der
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != signer_index)
            .map(|(_, c)| c.to_vec()),
    );
    check_requirements(signer, Role::TimestampingLeaf, "timestamp certificate")?;
    verify_path(
        &chain,
        tsa_roots,
        webpki::KeyUsage::required(EKU_TIME_STAMPING),
        &[gen_system],
    )
    .map_err(NotationError::TimestampUntrusted)?;

    Ok(Stamped {
        gen_time,
        lower,
        upper,
    })
}

/// sid: IssuerAndSerialNumber, or [0] SubjectKeyIdentifier.
fn sid_matches(sid: &Tlv<'_>, cert: &X509Certificate<'_>) -> bool {
    match sid.tag {
        0x30 => {
            let Ok(parts) = children(sid.value) else {
                return false;
            };
            match (parts.first(), parts.get(1)) {
                (Some(issuer), Some(serial)) => {
                    issuer.raw == cert.issuer().as_raw()
                        && serial.tag == 0x02
                        && serial.value == cert.raw_serial()
                }
                _ => false,
            }
        }
        0x80 => cert.extensions().iter().any(|ext| {
            matches!(
                ext.parsed_extension(),
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) if ski.0 == sid.value
            )
        }),
        _ => false,
    }
}

/// SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies OPTIONAL };
/// ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT sha256, certHash OCTET STRING, ... }.
/// The first ESSCertIDv2 must name the signing certificate.
fn check_signing_certificate_v2(value: &Tlv<'_>, signer_der: &[u8]) -> Result<(), NotationError> {
    let outer = children(expect(Some(value), 0x30, "SigningCertificateV2")?.value)?;
    let ids = children(expect(outer.first(), 0x30, "SigningCertificateV2.certs")?.value)?;
    let first = children(expect(ids.first(), 0x30, "ESSCertIDv2")?.value)?;
    let (alg, hash) = match first.first() {
        Some(t) if t.tag == 0x30 => (alg_oid(t)?, expect(first.get(1), 0x04, "certHash")?.value),
        Some(t) if t.tag == 0x04 => (OID_SHA256.to_string(), t.value),
        _ => return Err(fail("ESSCertIDv2 is malformed")),
    };
    if digest(&alg, signer_der)? != hash {
        return Err(fail("signing-certificate-v2 names another certificate"));
    }
    Ok(())
}

fn verify_cms_signature(
    signer: &X509Certificate<'_>,
    sig_alg: &str,
    digest_alg: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), NotationError> {
    use aws_lc_rs::signature as s;
    use x509_parser::public_key::PublicKey;
    let spki = signer.public_key();
    let key = spki.parsed().map_err(|e| fail(format!("TSA key: {e}")))?;
    let alg: &'static dyn s::VerificationAlgorithm = match (&key, sig_alg) {
        // rsaEncryption with the digest algorithm, or sha*WithRSAEncryption
        (PublicKey::RSA(_), "1.2.840.113549.1.1.1") => match digest_alg {
            OID_SHA256 => &s::RSA_PKCS1_2048_8192_SHA256,
            OID_SHA384 => &s::RSA_PKCS1_2048_8192_SHA384,
            OID_SHA512 => &s::RSA_PKCS1_2048_8192_SHA512,
            other => return Err(fail(format!("digest {other} is not supported"))),
        },
        (PublicKey::RSA(_), "1.2.840.113549.1.1.11") => &s::RSA_PKCS1_2048_8192_SHA256,
        (PublicKey::RSA(_), "1.2.840.113549.1.1.12") => &s::RSA_PKCS1_2048_8192_SHA384,
        (PublicKey::RSA(_), "1.2.840.113549.1.1.13") => &s::RSA_PKCS1_2048_8192_SHA512,
        (PublicKey::EC(_), ecdsa) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match (curve.as_str(), ecdsa) {
                ("1.2.840.10045.3.1.7", "1.2.840.10045.4.3.2") => &s::ECDSA_P256_SHA256_ASN1,
                ("1.2.840.10045.3.1.7", "1.2.840.10045.4.3.3") => &s::ECDSA_P256_SHA384_ASN1,
                ("1.3.132.0.34", "1.2.840.10045.4.3.2") => &s::ECDSA_P384_SHA256_ASN1,
                ("1.3.132.0.34", "1.2.840.10045.4.3.3") => &s::ECDSA_P384_SHA384_ASN1,
                ("1.3.132.0.35", "1.2.840.10045.4.3.4") => &s::ECDSA_P521_SHA512_ASN1,
                _ => {
                    return Err(fail(format!(
                        "ECDSA {ecdsa} on curve {curve} is not supported"
                    )));
                }
            }
        }
        (_, other) => {
            return Err(fail(format!(
                "signature algorithm {other} is not supported"
            )));
        }
    };
    s::UnparsedPublicKey::new(alg, &spki.subject_public_key.data[..])
        .verify(message, signature)
        .map_err(|_| fail("the TSA's signature does not verify"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_refuses_truncation_and_indefinite_lengths() {
        assert!(read_tlv(&[]).is_err());
        assert!(read_tlv(&[0x30]).is_err());
        assert!(read_tlv(&[0x30, 0x05, 0x01]).is_err());
        assert!(read_tlv(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        let (tlv, rest) = read_tlv(&[0x04, 0x02, 0xaa, 0xbb, 0x05, 0x00]).unwrap();
        assert_eq!(
            (tlv.tag, tlv.value, rest),
            (0x04, &[0xaa, 0xbb][..], &[0x05, 0x00][..])
        );
    }

    #[test]
    fn generalized_time_parses_utc_with_fractions() {
        let tlv = |s: &'static str| Tlv {
            tag: 0x18,
            value: s.as_bytes(),
            raw: s.as_bytes(),
        };
        let (t, frac) = generalized_time(&tlv("20260102030405.25Z")).unwrap();
        assert_eq!(t.unix_timestamp(), 1_767_323_045);
        assert_eq!(frac, Duration::from_millis(250));
        assert!(generalized_time(&tlv("20260102030405")).is_err());
        assert!(generalized_time(&tlv("2026010203040Z")).is_err());
        assert!(generalized_time(&tlv("20261302030405Z")).is_err());
    }

    #[test]
    fn garbage_tokens_are_refused() {
        let err = verify_token(&[0x30, 0x00], b"sig", &[], SystemTime::now());
        assert!(matches!(err, Err(NotationError::Timestamp(_))));
        let big = vec![0u8; MAX_TOKEN_BYTES + 1];
        assert!(verify_token(&big, b"sig", &[], SystemTime::now()).is_err());
    }
}
