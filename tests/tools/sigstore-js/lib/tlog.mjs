// In-process transparency logs that produce the same canonicalized bodies,
// inclusion proofs, checkpoints and SETs a real Rekor v1 / Rekor v2 would.
//
// Why not @sigstore/mock's Rekor? Its v1 handler stores the *proposed* entry
// verbatim (for dsse 0.0.1 that is `spec.proposedContent`, which no verifier,
// including @sigstore/verify, accepts), and its v2 handler stores the
// CreateEntryRequest instead of a rekor.v2.Entry and always makes a one-leaf
// tree with an empty proof. Here each entry sits at a random index of a small
// RFC 6962 tree padded with random leaves, so proofs have real sibling hashes.

import crypto from 'node:crypto';
import protobuf from '@sigstore/protobuf-specs';
import rekorV2 from '@sigstore/protobuf-specs/rekor/v2';
import core from '@sigstore/core';

const { HashAlgorithm, PublicKeyDetails } = protobuf;
const canonicalize = (obj) => core.json.canonicalize(obj);

const sha256 = (...parts) => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

// ---------------------------------------------------------------- Merkle tree
const leafHash = (body) => sha256(Buffer.from([0x00]), body);
const nodeHash = (l, r) => sha256(Buffer.from([0x01]), l, r);

const largestPow2Below = (n) => {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
};

// RFC 6962 section 2.1 MTH over leaf hashes
function mth(leaves) {
  if (leaves.length === 1) return leaves[0];
  const k = largestPow2Below(leaves.length);
  return nodeHash(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

// RFC 6962 section 2.1.1 PATH(m, D[n]), ordered from the leaf upwards
function path(m, leaves) {
  if (leaves.length <= 1) return [];
  const k = largestPow2Below(leaves.length);
  if (m < k) return [...path(m, leaves.slice(0, k)), mth(leaves.slice(k))];
  return [...path(m - k, leaves.slice(k)), mth(leaves.slice(0, k))];
}

// Place `body` at a random index in a random-sized tree of fake leaves.
function buildTree(body, opts = {}) {
  const index = opts.index ?? crypto.randomInt(0, 50);
  const size = opts.size ?? index + 1 + crypto.randomInt(0, 12);
  const leaves = [];
  for (let i = 0; i < size; i++) {
    leaves.push(i === index ? leafHash(body) : sha256(crypto.randomBytes(32)));
  }
  return { index, size, rootHash: mth(leaves), hashes: path(index, leaves) };
}

// ------------------------------------------------------------ key utilities
export const spkiDER = (key) =>
  (key.type === 'public' ? key : crypto.createPublicKey(key)).export({ format: 'der', type: 'spki' });

const signNote = (note, privateKey, keyHint, name) => {
  const isEd = privateKey.asymmetricKeyType === 'ed25519';
  const sig = crypto.sign(isEd ? null : 'sha256', Buffer.from(note), privateKey);
  return `\u2014 ${name} ${Buffer.concat([keyHint.subarray(0, 4), sig]).toString('base64')}\n`;
};

// --------------------------------------------------------------- Rekor v1
// One ECDSA P-256 key; logID = SHA-256(SPKI DER) and the checkpoint key hint is
// its first four bytes, as on rekor.sigstore.dev.
export class RekorV1Log {
  constructor({ baseURL, keyPair, clock }) {
    this.baseURL = baseURL;
    this.host = new URL(baseURL).host;
    this.privateKey = keyPair.privateKey;
    this.publicKeyDER = spkiDER(keyPair.publicKey);
    this.logID = sha256(this.publicKeyDER);
    this.treeID = BigInt('0x' + crypto.randomBytes(7).toString('hex')).toString();
    this.clock = clock;
  }

  // Canonicalized body as Rekor v1 stores it (not the proposed entry).
  body(content, publicKeyPEM, entryType) {
    const b64PEM = Buffer.from(publicKeyPEM).toString('base64');
    if (content.$case === 'messageSignature') {
      const ms = content.messageSignature;
      return {
        apiVersion: '0.0.1',
        kind: 'hashedrekord',
        spec: {
          data: { hash: { algorithm: 'sha256', value: ms.messageDigest.digest.toString('hex') } },
          signature: { content: ms.signature.toString('base64'), publicKey: { content: b64PEM } },
        },
      };
    }
    const env = content.dsseEnvelope;
    if (entryType === 'intoto') {
      // intoto 0.0.2 as stored: payload dropped, sig and key double-base64.
      const sig = env.signatures[0];
      const envForHash = {
        payloadType: env.payloadType,
        payload: env.payload.toString('base64'),
        signatures: [{ sig: sig.sig.toString('base64'), publicKey: publicKeyPEM, ...(sig.keyid ? { keyid: sig.keyid } : {}) }],
      };
      return {
        apiVersion: '0.0.2',
        kind: 'intoto',
        spec: {
          content: {
            envelope: {
              payloadType: env.payloadType,
              signatures: [{
                sig: Buffer.from(sig.sig.toString('base64')).toString('base64'),
                publicKey: b64PEM,
                ...(sig.keyid ? { keyid: sig.keyid } : {}),
              }],
            },
            hash: { algorithm: 'sha256', value: sha256(canonicalize(envForHash)).toString('hex') },
            payloadHash: { algorithm: 'sha256', value: sha256(env.payload).toString('hex') },
          },
        },
      };
    }
    // dsse 0.0.1 as stored: hashes + signatures with their verifier.
    const envelopeJSON = JSON.stringify({
      payload: env.payload.toString('base64'),
      payloadType: env.payloadType,
      signatures: env.signatures.map((s) => ({ keyid: s.keyid, sig: s.sig.toString('base64') })),
    });
    return {
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(envelopeJSON).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(env.payload).toString('hex') },
        signatures: env.signatures.map((s) => ({ signature: s.sig.toString('base64'), verifier: b64PEM })),
      },
    };
  }

  entry(content, publicKeyPEM, entryType) {
    const bodyObj = this.body(content, publicKeyPEM, entryType);
    const body = Buffer.from(canonicalize(bodyObj));
    const tree = buildTree(body);
    const integratedTime = Math.floor(this.clock().getTime() / 1000);
    const logIndex = tree.index;
    const set = crypto.sign('sha256', Buffer.from(canonicalize({
      body: body.toString('base64'),
      integratedTime,
      logID: this.logID.toString('hex'),
      logIndex,
    })), this.privateKey);
    const origin = `${this.host} - ${this.treeID}`;
    const note = `${origin}\n${tree.size}\n${tree.rootHash.toString('base64')}\n`;
    const checkpoint = `${note}\n${signNote(note, this.privateKey, this.logID, this.host)}`;
    return {
      logIndex: String(logIndex),
      logId: { keyId: this.logID },
      kindVersion: { kind: bodyObj.kind, version: bodyObj.apiVersion },
      integratedTime: String(integratedTime),
      inclusionPromise: { signedEntryTimestamp: set },
      inclusionProof: {
        logIndex: String(logIndex),
        treeSize: String(tree.size),
        rootHash: tree.rootHash,
        hashes: tree.hashes,
        checkpoint: { envelope: checkpoint },
      },
      canonicalizedBody: body,
    };
  }

  trustedRootEntry(validFrom) {
    return {
      baseUrl: this.baseURL,
      hashAlgorithm: HashAlgorithm.SHA2_256,
      publicKey: {
        rawBytes: this.publicKeyDER,
        keyDetails: PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
        validFor: { start: validFrom },
      },
      logId: { keyId: this.logID },
    };
  }
}

// --------------------------------------------------------------- Rekor v2
// Ed25519 key like the public-good log2025-1 shard. The C2SP signed-note key
// ID SHA-256(origin || 0x0A || 0x01 || raw key) is used both as the checkpoint
// key hint (first 4 bytes) and as logId in the trusted root and the entry,
// which is what the public-good trusted_root.json does for its v2 shard.
export class RekorV2Log {
  constructor({ baseURL, keyPair }) {
    this.baseURL = baseURL;
    this.origin = new URL(baseURL).host;
    this.privateKey = keyPair.privateKey;
    this.publicKeyDER = spkiDER(keyPair.publicKey);
    const raw = this.publicKeyDER.subarray(this.publicKeyDER.length - 32);
    this.keyID = sha256(Buffer.from(this.origin + '\n'), Buffer.from([0x01]), raw);
  }

  body(content, publicKeyPEM, isCert) {
    const der = core.pem.toDER(publicKeyPEM);
    const verifier = {
      keyDetails: PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
      verifier: isCert
        ? { $case: 'x509Certificate', x509Certificate: { rawBytes: der } }
        : { $case: 'publicKey', publicKey: { rawBytes: der } },
    };
    if (content.$case === 'messageSignature') {
      const ms = content.messageSignature;
      return {
        kind: 'hashedrekord',
        apiVersion: '0.0.2',
        spec: { spec: { $case: 'hashedRekordV002', hashedRekordV002: {
          data: { algorithm: HashAlgorithm.SHA2_256, digest: ms.messageDigest.digest },
          signature: { content: ms.signature, verifier },
        } } },
      };
    }
    const env = content.dsseEnvelope;
    return {
      kind: 'dsse',
      apiVersion: '0.0.2',
      spec: { spec: { $case: 'dsseV002', dsseV002: {
        payloadHash: { algorithm: HashAlgorithm.SHA2_256, digest: sha256(env.payload) },
        signatures: env.signatures.map((s) => ({ content: s.sig, verifier })),
      } } },
    };
  }

  entry(content, publicKeyPEM, isCert) {
    const entry = this.body(content, publicKeyPEM, isCert);
    const body = Buffer.from(canonicalize(rekorV2.Entry.toJSON(entry)));
    const tree = buildTree(body);
    const note = `${this.origin}\n${tree.size}\n${tree.rootHash.toString('base64')}\n`;
    const checkpoint = `${note}\n${signNote(note, this.privateKey, this.keyID, this.origin)}`;
    return {
      logIndex: String(tree.index),
      logId: { keyId: this.keyID },
      kindVersion: { kind: entry.kind, version: entry.apiVersion },
      // Rekor v2 gives no integrated time and no SET; time comes from a TSA.
      integratedTime: '0',
      inclusionPromise: undefined,
      inclusionProof: {
        logIndex: String(tree.index),
        treeSize: String(tree.size),
        rootHash: tree.rootHash,
        hashes: tree.hashes,
        checkpoint: { envelope: checkpoint },
      },
      canonicalizedBody: body,
    };
  }

  trustedRootEntry(validFrom) {
    return {
      baseUrl: this.baseURL,
      hashAlgorithm: HashAlgorithm.SHA2_256,
      publicKey: {
        rawBytes: this.publicKeyDER,
        keyDetails: PublicKeyDetails.PKIX_ED25519,
        validFor: { start: validFrom },
      },
      logId: { keyId: this.keyID },
    };
  }
}

// A @sigstore/sign Witness backed by one of the logs above.
export class LogWitness {
  constructor(log, { version, entryType }) {
    this.log = log;
    this.version = version;
    this.entryType = entryType;
  }

  async testify(content, publicKeyPEM) {
    const isCert = publicKeyPEM.includes('BEGIN CERTIFICATE');
    const entry = this.version === 2
      ? this.log.entry(content, publicKeyPEM, isCert)
      : this.log.entry(content, publicKeyPEM, this.entryType);
    return { tlogEntries: [entry] };
  }
}
