#!/usr/bin/env python3
"""An independent Notary Project (Notation) test signer, for portcullis's tests.

Written from the Notary Project specifications, apart from the Rust verifier, with PyPI
`cryptography` (keys, certificates, JWS signatures), `pycose` (COSE_Sign1) and `asn1crypto`
(RFC 3161 timestamp tokens). Subcommands:

  keygen  --out DIR [--alg ES256|ES384|ES512|PS256|PS384|PS512] [--subject DN] [--expired]
          writes DIR/ca.pem (root CA), DIR/leaf.pem + DIR/leaf.key (code-signing leaf),
          DIR/tsa-ca.pem, DIR/tsa.pem + DIR/tsa.key (an RFC 3161 TSA).
  sign    --keys DIR --digest D --media-type M --size N --format jws|cose --out FILE
          [--wrong-digest] [--tamper] [--expiry SECONDS] [--timestamp] [--crit NAME]
          [--scheme S] [--alg-override ALG]
  push    --registry HOST:PORT --repo NAME --digest D --media-type M --size N
          --format jws|cose --envelope FILE --keys DIR
          pushes the envelope as Notation does: an OCI image manifest with artifactType
          application/vnd.cncf.notary.signature and `subject`, and, when the registry has no
          referrers API, appends it to the referrers tag-schema index `sha256-<hex>`.

Plain HTTP only (meant for a registry on 127.0.0.1).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PAYLOAD_CTY = "application/vnd.cncf.notary.payload.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
EMPTY_MT = "application/vnd.oci.empty.v1+json"
ENVELOPE_MT = {"jws": "application/jose+json", "cose": "application/cose"}

ALGS = {
    # alg: (key kind, key parameter, hash)
    "ES256": ("ec", ec.SECP256R1(), hashes.SHA256()),
    "ES384": ("ec", ec.SECP384R1(), hashes.SHA384()),
    "ES512": ("ec", ec.SECP521R1(), hashes.SHA512()),
    "PS256": ("rsa", 2048, hashes.SHA256()),
    "PS384": ("rsa", 3072, hashes.SHA384()),
    "PS512": ("rsa", 4096, hashes.SHA512()),
}

ATTR = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def parse_subject(text):
    attrs = []
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        attrs.append(x509.NameAttribute(ATTR[key.strip().upper()], value.strip()))
    return x509.Name(attrs)


def new_key(alg):
    kind, param, _ = ALGS[alg]
    if kind == "ec":
        return ec.generate_private_key(param)
    return rsa.generate_private_key(public_exponent=65537, key_size=param)


def cert_hash_for(key):
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    size = key.curve.key_size
    return hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512()


def make_ca(name, key, not_before, not_after):
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, cert_hash_for(key))
    )


def make_leaf(name, key, ca_cert, ca_key, not_before, not_after, eku, eku_critical):
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=eku_critical)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, cert_hash_for(ca_key))
    )


def write_pem(path, *certs):
    with open(path, "wb") as f:
        for c in certs:
            f.write(c.public_bytes(serialization.Encoding.PEM))


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def cmd_keygen(args):
    os.makedirs(args.out, exist_ok=True)
    t = now()
    ca_key = new_key(args.ca_alg or args.alg)
    ca = make_ca(parse_subject(args.ca_subject), ca_key, t - datetime.timedelta(days=30),
                 t + datetime.timedelta(days=3650))
    leaf_key = new_key(args.alg)
    if args.expired:
        nb, na = t - datetime.timedelta(days=20), t - datetime.timedelta(days=10)
    else:
        nb, na = t - datetime.timedelta(days=1), t + datetime.timedelta(days=365)
    leaf = make_leaf(parse_subject(args.subject), leaf_key, ca, ca_key, nb, na,
                     ExtendedKeyUsageOID.CODE_SIGNING, False)
    write_pem(os.path.join(args.out, "ca.pem"), ca)
    write_pem(os.path.join(args.out, "leaf.pem"), leaf)
    write_key(os.path.join(args.out, "leaf.key"), leaf_key)
    write_pem(os.path.join(args.out, "chain.pem"), leaf, ca)
    # A timestamping authority with its own root.
    tsa_ca_key = ec.generate_private_key(ec.SECP256R1())
    tsa_ca = make_ca(parse_subject("C=US, ST=WA, O=Test TSA, CN=Test TSA Root"), tsa_ca_key,
                     t - datetime.timedelta(days=30), t + datetime.timedelta(days=3650))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = make_leaf(parse_subject("C=US, ST=WA, O=Test TSA, CN=Test TSA"), tsa_key, tsa_ca,
                    tsa_ca_key, t - datetime.timedelta(days=1), t + datetime.timedelta(days=365),
                    ExtendedKeyUsageOID.TIME_STAMPING, True)
    write_pem(os.path.join(args.out, "tsa-ca.pem"), tsa_ca)
    write_pem(os.path.join(args.out, "tsa.pem"), tsa)
    write_key(os.path.join(args.out, "tsa.key"), tsa_key)


def load_keys(directory):
    def pem(name):
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()

    chain = x509.load_pem_x509_certificates(pem("chain.pem"))
    key = serialization.load_pem_private_key(pem("leaf.key"), password=None)
    return chain, key, pem("leaf.key")


def alg_of(key):
    if isinstance(key, rsa.RSAPrivateKey):
        return {2048: "PS256", 3072: "PS384", 4096: "PS512"}[key.key_size]
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws_sign(key, alg, data):
    _, _, h = ALGS[alg]
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    der = key.sign(data, ec.ECDSA(h))
    r, s = decode_dss_signature(der)
    n = (key.curve.key_size + 7) // 8
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def timestamp_token(keys_dir, signature):
    """An RFC 3161 TimeStampToken over `signature`, signed by the test TSA."""
    from asn1crypto import cms, core, tsp
    from asn1crypto import x509 as ax509

    def read(name):
        with open(os.path.join(keys_dir, name), "rb") as f:
            return f.read()

    tsa_cert = x509.load_pem_x509_certificate(read("tsa.pem"))
    tsa_ca = x509.load_pem_x509_certificate(read("tsa-ca.pem"))
    tsa_key = serialization.load_pem_private_key(read("tsa.key"), password=None)
    tsa_der = tsa_cert.public_bytes(serialization.Encoding.DER)
    tst = tsp.TSTInfo({
        "version": "v1",
        "policy": "1.3.6.1.4.1.99999.1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(signature).digest(),
        },
        "serial_number": int.from_bytes(os.urandom(8), "big"),
        "gen_time": now(),
        "accuracy": {"seconds": 1},
    })
    econtent = tst.dump()
    signed_attrs = cms.CMSAttributes([
        {"type": "content_type", "values": ["tst_info"]},
        {"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]},
        {"type": "signing_certificate_v2", "values": [{
            "certs": [{"hash_algorithm": {"algorithm": "sha256"},
                       "cert_hash": hashlib.sha256(tsa_der).digest()}],
        }]},
    ])
    cms_sig = tsa_key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
    a_tsa = ax509.Certificate.load(tsa_der)
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": {
            "issuer": a_tsa.issuer, "serial_number": a_tsa.serial_number}}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": "sha256_ecdsa"},
        "signature": cms_sig,
    })
    signed_data = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "tst_info",
                               "content": core.ParsableOctetString(econtent)},
        "certificates": [a_tsa, ax509.Certificate.load(
            tsa_ca.public_bytes(serialization.Encoding.DER))],
        "signer_infos": [signer],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def payload_bytes(args):
    digest = args.digest
    if args.wrong_digest:
        digest = "sha256:" + hashlib.sha256(b"another image").hexdigest()
    return json.dumps({"targetArtifact": {
        "mediaType": args.media_type, "digest": digest, "size": args.size,
    }}, separators=(",", ":")).encode()


def cmd_sign(args):
    chain, key, key_pem = load_keys(args.keys)
    alg = args.alg_override or alg_of(key)
    payload = payload_bytes(args)
    t = now()
    crit = ["io.cncf.notary.signingScheme"]
    expiry = None
    if args.expiry is not None:
        expiry = t + datetime.timedelta(seconds=args.expiry)
        crit.append("io.cncf.notary.expiry")
    crit.extend(args.crit or [])
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    if args.format == "jws":
        protected = {
            "alg": alg,
            "cty": PAYLOAD_CTY,
            "crit": crit,
            "io.cncf.notary.signingScheme": args.scheme,
            "io.cncf.notary.signingTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if expiry is not None:
            protected["io.cncf.notary.expiry"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        for extra in args.crit or []:
            protected[extra] = "x"
        p64 = b64url(json.dumps(protected, separators=(",", ":")).encode())
        pl64 = b64url(payload)
        sig = jws_sign(key, alg, f"{p64}.{pl64}".encode())
        header = {"x5c": [base64.b64encode(d).decode() for d in ders],
                  "io.cncf.notary.signingAgent": "portcullis-test-signer/1"}
        if args.timestamp:
            header["io.cncf.notary.timestampSignature"] = base64.b64encode(
                timestamp_token(args.keys, sig)).decode()
        if args.tamper:
            pl64 = b64url(payload.replace(b'"size":', b'"size":1'))
        out = json.dumps({"payload": pl64, "protected": p64, "header": header,
                          "signature": b64url(sig)}).encode()
    else:
        import cbor2
        from pycose import algorithms, headers
        from pycose.keys import CoseKey
        from pycose.messages import Sign1Message

        cose_alg = {"ES256": algorithms.Es256, "ES384": algorithms.Es384,
                    "ES512": algorithms.Es512, "PS256": algorithms.Ps256,
                    "PS384": algorithms.Ps384, "PS512": algorithms.Ps512}[alg]
        phdr = {
            headers.Algorithm: cose_alg,
            headers.Critical: crit,
            headers.ContentType: PAYLOAD_CTY,
            "io.cncf.notary.signingScheme": args.scheme,
            "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(t.timestamp())),
        }
        if expiry is not None:
            phdr["io.cncf.notary.expiry"] = cbor2.CBORTag(1, int(expiry.timestamp()))
        for extra in args.crit or []:
            phdr[extra] = "x"
        msg = Sign1Message(phdr=phdr, uhdr={headers.X5chain: ders,
                                            "io.cncf.notary.signingAgent": "portcullis-test-signer/1"},
                           payload=payload)
        msg.key = CoseKey.from_pem_private_key(key_pem.decode())
        encoded = msg.encode(tag=True)
        if args.timestamp or args.tamper:
            tag = cbor2.loads(encoded)
            body = list(tag.value)
            if args.timestamp:
                uhdr = dict(body[1])
                uhdr["io.cncf.notary.timestampSignature"] = timestamp_token(args.keys, body[3])
                body[1] = uhdr
            if args.tamper:
                body[2] = body[2].replace(b'"size":', b'"size":1')
            encoded = cbor2.dumps(cbor2.CBORTag(18, body))
        out = encoded
    with open(args.out, "wb") as f:
        f.write(out)


# ---- registry push ------------------------------------------------------------------------


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def push_blob(base, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = http("HEAD", f"{base}/v2/{repo}/blobs/{digest}")
    if status == 200:
        return digest
    status, hdrs, body = http("POST", f"{base}/v2/{repo}/blobs/uploads/")
    if status != 202:
        raise SystemExit(f"blob upload start: HTTP {status}: {body[:200]!r}")
    location = hdrs.get("Location") or hdrs.get("location")
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    status, _, body = http("PUT", f"{location}{sep}digest={digest}", data,
                           {"Content-Type": "application/octet-stream"})
    if status != 201:
        raise SystemExit(f"blob upload: HTTP {status}: {body[:200]!r}")
    return digest


def push_manifest(base, repo, ref, data, media_type):
    status, _, body = http("PUT", f"{base}/v2/{repo}/manifests/{ref}", data,
                           {"Content-Type": media_type})
    if status != 201:
        raise SystemExit(f"manifest {ref}: HTTP {status}: {body[:300]!r}")


def cmd_push(args):
    base = f"http://{args.registry}"
    repo = args.repo
    with open(args.envelope, "rb") as f:
        envelope = f.read()
    chain, _, _ = load_keys(args.keys)
    thumbprints = [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
                   for c in chain]
    config = b"{}"
    config_digest = push_blob(base, repo, config)
    env_digest = push_blob(base, repo, envelope)
    annotations = {
        "io.cncf.notary.x509chain.thumbprint#S256": json.dumps(thumbprints, separators=(",", ":")),
        "org.opencontainers.image.created": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MT, "digest": config_digest, "size": len(config),
                   "data": base64.b64encode(config).decode()},
        "layers": [{"mediaType": ENVELOPE_MT[args.format], "digest": env_digest,
                    "size": len(envelope)}],
        "subject": {"mediaType": args.media_type, "digest": args.digest, "size": args.size},
        "annotations": annotations,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    sig_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    push_manifest(base, repo, sig_digest, body, MANIFEST_MT)
    descriptor = {"mediaType": MANIFEST_MT, "digest": sig_digest, "size": len(body),
                  "artifactType": ARTIFACT_TYPE, "annotations": annotations}
    status, _, _ = http("GET", f"{base}/v2/{repo}/referrers/{args.digest}",
                        headers={"Accept": INDEX_MT})
    if status == 200:
        print(sig_digest)
        return  # the registry indexes `subject` itself
    # Referrers tag schema: an index under tag sha256-<hex>, appended to.
    tag = args.digest.replace(":", "-")
    status, _, existing = http("GET", f"{base}/v2/{repo}/manifests/{tag}",
                               headers={"Accept": INDEX_MT})
    if status == 200:
        index = json.loads(existing)
    elif status == 404:
        index = {"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": []}
    else:
        raise SystemExit(f"referrers tag {tag}: HTTP {status}")
    if not any(m.get("digest") == sig_digest for m in index.get("manifests", [])):
        index.setdefault("manifests", []).append(descriptor)
    push_manifest(base, repo, tag, json.dumps(index, separators=(",", ":")).encode(), INDEX_MT)
    print(sig_digest)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keygen")
    k.add_argument("--out", required=True)
    k.add_argument("--alg", default="ES256", choices=sorted(ALGS))
    k.add_argument("--ca-alg", choices=sorted(ALGS))
    k.add_argument("--subject", default="C=US, ST=WA, L=Seattle, O=example, CN=signer")
    k.add_argument("--ca-subject", default="C=US, ST=WA, O=example, CN=Test Root CA")
    k.add_argument("--expired", action="store_true", help="leaf validity ended 10 days ago")

    s = sub.add_parser("sign")
    s.add_argument("--keys", required=True)
    s.add_argument("--digest", required=True)
    s.add_argument("--media-type", default=MANIFEST_MT)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--format", choices=["jws", "cose"], required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--wrong-digest", action="store_true")
    s.add_argument("--tamper", action="store_true", help="alter the payload after signing")
    s.add_argument("--expiry", type=int, help="io.cncf.notary.expiry, seconds from now (<0: past)")
    s.add_argument("--timestamp", action="store_true", help="add an RFC 3161 countersignature")
    s.add_argument("--crit", action="append", help="an extra critical protected header")
    s.add_argument("--scheme", default="notary.x509")
    s.add_argument("--alg-override", choices=sorted(ALGS))

    p = sub.add_parser("push")
    p.add_argument("--registry", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--digest", required=True)
    p.add_argument("--media-type", default=MANIFEST_MT)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--format", choices=["jws", "cose"], required=True)
    p.add_argument("--envelope", required=True)
    p.add_argument("--keys", required=True)

    args = parser.parse_args()
    {"keygen": cmd_keygen, "sign": cmd_sign, "push": cmd_push}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
