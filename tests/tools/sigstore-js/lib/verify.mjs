// Oracle: check a bundle with @sigstore/verify against a trusted root, then
// check that it is bound to the expected image digest.

import crypto from 'node:crypto';
import bundleLib from '@sigstore/bundle';
import protobuf from '@sigstore/protobuf-specs';
import verifyLib from '@sigstore/verify';

const { bundleFromJSON } = bundleLib;
const { TrustedRoot } = protobuf;
const { Verifier, toSignedEntity, toTrustMaterial } = verifyLib;

const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

// opts: { bundle (JSON object), trustedRoot (JSON object), digest
// ('sha256:<hex>'), keyPEM?, san?, issuer?, artifact? (Buffer, needed for
// message signatures), predicateType? }
// Returns a summary object; throws on failure.
export function verifyBundle(opts) {
  const bundle = bundleFromJSON(opts.bundle);
  const root = TrustedRoot.fromJSON(opts.trustedRoot);
  const vm = bundle.verificationMaterial;

  let keys;
  if (vm.content.$case === 'publicKey') {
    if (!opts.keyPEM) throw new Error('bundle is signed with a key: pass --key PUBLIC.pem');
    const der = crypto.createPublicKey(opts.keyPEM).export({ format: 'der', type: 'spki' });
    keys = { [vm.content.publicKey.hint]: { rawBytes: der } };
  }

  const tlogs = vm.tlogEntries.length;
  const tsas = vm.timestampVerificationData?.rfc3161Timestamps?.length ?? 0;
  const sets = vm.tlogEntries.filter((e) => e.inclusionPromise).length;
  const isCert = vm.content.$case !== 'publicKey';
  const verifier = new Verifier(toTrustMaterial(root, keys), {
    tlogThreshold: tlogs,
    ctlogThreshold: isCert ? 1 : 0,
    timestampThreshold: isCert ? Math.max(1, tsas + sets) : tsas + sets,
  });

  if (bundle.content.$case === 'messageSignature' && !opts.artifact) {
    throw new Error('message-signature bundle: pass --artifact FILE (the manifest bytes)');
  }
  const entity = toSignedEntity(bundle, opts.artifact);
  const policy = {};
  if (opts.san) policy.subjectAlternativeName = opts.san;
  if (opts.issuer) policy.extensions = { issuer: opts.issuer };
  const signer = verifier.verify(entity, isCert ? policy : undefined);
  // @sigstore/verify matches the SAN as a regular expression; demand equality.
  if (opts.san && signer.identity?.subjectAlternativeName !== opts.san) {
    throw new Error(`SAN ${signer.identity?.subjectAlternativeName} is not exactly ${opts.san}`);
  }

  // Bind the signature to the image digest.
  const [algo, hex] = opts.digest.split(':');
  if (algo !== 'sha256' || !/^[0-9a-f]{64}$/.test(hex)) throw new Error(`bad digest ${opts.digest}`);
  let predicateType;
  if (bundle.content.$case === 'dsseEnvelope') {
    const env = bundle.content.dsseEnvelope;
    if (env.payloadType !== INTOTO_PAYLOAD_TYPE) throw new Error(`payloadType ${env.payloadType}`);
    const stmt = JSON.parse(env.payload.toString('utf8'));
    predicateType = stmt.predicateType;
    if (!(stmt.subject || []).some((s) => s.digest?.sha256 === hex)) {
      throw new Error(`statement subject does not name ${opts.digest}`);
    }
    if (opts.predicateType && predicateType !== opts.predicateType) {
      throw new Error(`predicateType ${predicateType}, expected ${opts.predicateType}`);
    }
  } else {
    const got = bundle.content.messageSignature.messageDigest.digest.toString('hex');
    if (got !== hex) throw new Error(`messageDigest sha256:${got} is not ${opts.digest}`);
  }

  return {
    mediaType: bundle.mediaType,
    content: bundle.content.$case,
    key: vm.content.$case,
    identity: signer.identity?.subjectAlternativeName,
    issuer: signer.identity?.extensions?.issuer,
    tlogEntries: vm.tlogEntries.map((e) => `${e.kindVersion.kind} ${e.kindVersion.version}${e.inclusionPromise ? ' +SET' : ''}${e.inclusionProof ? ' +proof' : ''}`),
    rfc3161Timestamps: tsas,
    predicateType,
  };
}
