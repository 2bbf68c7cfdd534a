#!/usr/bin/env node
// Make a real Sigstore bundle for a container image digest with @sigstore/sign
// and the @sigstore/mock services, check it with @sigstore/verify, and
// optionally attach it to the image in an OCI registry with @sigstore/oci.
// See README.md for the flags.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import bundleLib from '@sigstore/bundle';
import oci from '@sigstore/oci';
import sign from '@sigstore/sign';
import { createServices, serveMocks, trustedRoot, URLS } from './lib/pki.mjs';
import { LogWitness } from './lib/tlog.mjs';
import { verifyBundle } from './lib/verify.mjs';

const INTOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';
const DEFAULT_SAN = 'https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main';
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(',');

// GitHub OIDC claims the mock Fulcio turns into certificate extensions
// (see README for the claim -> OID table).
const GH_CLAIM_FLAGS = {
  'gh-repository': 'repository', // 1.5 (legacy), 1.12 https://github.com/<v>
  'gh-ref': 'ref', // 1.6 (legacy), 1.14
  'gh-sha': 'sha', // 1.3 (legacy), 1.13
  'gh-workflow-ref': 'job_workflow_ref', // 1.9 https://github.com/<v>
  'gh-job-workflow-sha': 'job_workflow_sha', // 1.10
  'gh-runner-environment': 'runner_environment', // 1.11
  'gh-event': 'event_name', // 1.2 (legacy), 1.20
  'gh-workflow': 'workflow', // 1.4 (legacy)
  'gh-repository-id': 'repository_id', // 1.15
  'gh-owner': 'repository_owner', // 1.16 https://github.com/<v>
  'gh-owner-id': 'repository_owner_id', // 1.17
  'gh-build-config-ref': 'workflow_ref', // 1.18 https://github.com/<v>
  'gh-build-config-sha': 'workflow_sha', // 1.19
  'gh-visibility': 'repository_visibility', // 1.22
  'gh-run-id': 'run_id', // with repository + run_attempt: 1.21
  'gh-run-attempt': 'run_attempt',
};

const USAGE = `usage: node sign.mjs --digest sha256:<hex> --out DIR [options]
  --repository NAME          in-toto subject name (default: from --push)
  --kind keyless|key|tsa-only (default keyless)
  --rekor v1|v2|none         (default v1; tsa-only forces none)
  --tlog-kind dsse|intoto    Rekor v1 entry kind for DSSE bundles (default dsse)
  --tsa                      also add an RFC 3161 timestamp (always on for tsa-only and --rekor v2)
  --predicate-type URI       (default ${COSIGN_SIGN_PREDICATE})
  --predicate FILE           JSON predicate (default {})
  --subject-digest sha256:H  put H in the statement subject instead of --digest
  --message-signature        messageSignature bundle over the manifest bytes
  --artifact FILE            manifest bytes for --message-signature (else fetched from --push)
  --bundle-v02               keep sigstore-js's v0.2 media type + chain for --message-signature
  --key FILE                 PEM private key (ECDSA P-256) for --kind key; generated if absent
  --identity-san URI         certificate SAN (default ${DEFAULT_SAN})
  --issuer URI               OIDC issuer (default ${GITHUB_ISSUER})
  --gh-* VALUE               GitHub claims, see README; --no-gh-claims to leave them out
  --claim K=V                extra raw OIDC claim (repeatable)
  --state DIR                persist the mock CA/TSA/log keys so several bundles share one trusted root
  --push REGISTRY/REPO       attach the bundle to --digest there (OCI referrers / tag schema)
  --plain-http               talk http to the registry (@sigstore/oci does so for 127.0.0.1/localhost)
  --no-verify                skip the @sigstore/verify oracle
  --tsa-millis               put .123 s in the TSA genTime (GeneralizedTime with a fraction)
  --tsa-negative-serial      keep the mock TSA's negative TSTInfo serial (-0x21524111)`;

function die(msg, code = 2) {
  console.error(`sign.mjs: ${msg}`);
  process.exit(code);
}

function args() {
  const options = {
    digest: { type: 'string' },
    repository: { type: 'string' },
    kind: { type: 'string', default: 'keyless' },
    rekor: { type: 'string' },
    'tlog-kind': { type: 'string', default: 'dsse' },
    tsa: { type: 'boolean', default: false },
    'predicate-type': { type: 'string', default: COSIGN_SIGN_PREDICATE },
    predicate: { type: 'string' },
    'subject-digest': { type: 'string' },
    'message-signature': { type: 'boolean', default: false },
    artifact: { type: 'string' },
    'bundle-v02': { type: 'boolean', default: false },
    key: { type: 'string' },
    'identity-san': { type: 'string', default: DEFAULT_SAN },
    issuer: { type: 'string', default: GITHUB_ISSUER },
    'no-gh-claims': { type: 'boolean', default: false },
    claim: { type: 'string', multiple: true, default: [] },
    state: { type: 'string' },
    out: { type: 'string' },
    push: { type: 'string' },
    'plain-http': { type: 'boolean', default: false },
    'no-verify': { type: 'boolean', default: false },
    'tsa-millis': { type: 'boolean', default: false },
    'tsa-negative-serial': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  };
  for (const f of Object.keys(GH_CLAIM_FLAGS)) options[f] = { type: 'string' };
  let v;
  try {
    ({ values: v } = parseArgs({ options }));
  } catch (e) {
    die(`${e.message}\n${USAGE}`);
  }
  if (v.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const isDigest = (d) => /^sha256:[0-9a-f]{64}$/.test(d || '');
  if (!isDigest(v.digest)) die('--digest sha256:<64 hex> is required');
  if (v['subject-digest'] && !isDigest(v['subject-digest'])) die('--subject-digest must be sha256:<64 hex>');
  if (!v.out) die('--out DIR is required');
  if (!['keyless', 'key', 'tsa-only'].includes(v.kind)) die('--kind must be keyless, key or tsa-only');
  v.rekor = v.rekor ?? (v.kind === 'tsa-only' ? 'none' : 'v1');
  if (!['v1', 'v2', 'none'].includes(v.rekor)) die('--rekor must be v1, v2 or none');
  if (v.kind === 'tsa-only' && v.rekor !== 'none') die('--kind tsa-only makes no tlog entry; drop --rekor');
  if (!['dsse', 'intoto'].includes(v['tlog-kind'])) die('--tlog-kind must be dsse or intoto');
  if (v['message-signature'] && v['subject-digest']) {
    die('--subject-digest is for DSSE statements; for a message signature over other bytes pass --artifact');
  }
  if (v['plain-http'] && v.push && !/^(localhost|127\.0\.0\.1)(:\d+)?\//.test(v.push)) {
    die('--plain-http works only for localhost / 127.0.0.1 registries (@sigstore/oci decides the scheme by host)');
  }
  v.repository = v.repository ?? v.push;
  if (!v.repository && !v['message-signature']) die('--repository NAME (or --push) is required');
  return v;
}

function oidcClaims(v) {
  const claims = { iss: v.issuer, sub: v['identity-san'], aud: 'sigstore' };
  // GitHub defaults derived from a workflow SAN, e.g.
  // https://github.com/OWNER/REPO/.github/workflows/FILE@REF
  const m = v['identity-san'].match(/^https:\/\/github\.com\/(([^/]+)\/[^/]+)\/(\.github\/workflows\/[^@]+)@(.+)$/);
  if (!v['no-gh-claims'] && v.issuer === GITHUB_ISSUER && m) {
    const [, repo, owner, , ref] = m;
    Object.assign(claims, {
      repository: repo,
      ref,
      sha: crypto.createHash('sha1').update(repo + ref).digest('hex'),
      job_workflow_ref: m[0].slice('https://github.com/'.length),
      runner_environment: 'github-hosted',
      event_name: 'push',
      repository_owner: owner,
      workflow_ref: m[0].slice('https://github.com/'.length),
      repository_visibility: 'public',
    });
  }
  for (const [flag, claim] of Object.entries(GH_CLAIM_FLAGS)) {
    if (v[flag] !== undefined) claims[claim] = v[flag];
  }
  for (const kv of v.claim) {
    const i = kv.indexOf('=');
    if (i < 1) die(`--claim expects K=V, got ${kv}`);
    claims[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return claims;
}

// An unsigned-looking JWT: the mock Fulcio only decodes the payload.
const b64url = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function identityToken(claims, now) {
  const t = Math.floor(now.getTime() / 1000);
  return [b64url({ alg: 'RS256', typ: 'JWT', kid: 'mock' }),
    b64url({ ...claims, iat: t, nbf: t, exp: t + 600 }),
    crypto.randomBytes(32).toString('base64url')].join('.');
}

function keySigner(privateKey) {
  const publicKey = crypto.createPublicKey(privateKey);
  const der = publicKey.export({ format: 'der', type: 'spki' });
  const hint = crypto.createHash('sha256').update(der).digest('base64');
  const pem = publicKey.export({ format: 'pem', type: 'spki' });
  return {
    pem,
    hint,
    sign: async (data) => ({
      signature: crypto.sign('sha256', data, privateKey),
      key: { $case: 'publicKey', publicKey: pem, hint },
    }),
  };
}

async function fetchManifest(pushRef, digest) {
  const i = pushRef.indexOf('/');
  const host = pushRef.slice(0, i);
  const repo = pushRef.slice(i + 1);
  const scheme = /^(localhost|127\.0\.0\.1)(:\d+)?$/.test(host) ? 'http' : 'https';
  const res = await fetch(`${scheme}://${host}/v2/${repo}/manifests/${digest}`, { headers: { Accept: MANIFEST_ACCEPT } });
  if (res.status !== 200) throw new Error(`GET manifest ${digest}: HTTP ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

async function main() {
  const v = args();
  fs.mkdirSync(v.out, { recursive: true });

  // One instant for everything, in whole seconds, taken only after the mock
  // has minted its root certificates (see README, mock quirks).
  const clock = {};
  const services = await createServices({ stateDir: v.state, clock, negativeTsaSerial: v['tsa-negative-serial'] });
  const certTime = new Date(Math.floor(Date.now() / 1000) * 1000);
  clock.cert = certTime;
  clock.tsa = v['tsa-millis'] ? new Date(certTime.getTime() + 123) : certTime;

  // What to sign.
  let artifact;
  let predicateType;
  if (v['message-signature']) {
    const bytes = v.artifact ? fs.readFileSync(v.artifact) : v.push ? await fetchManifest(v.push, v.digest) : undefined;
    if (!bytes) die('--message-signature needs the manifest bytes: --artifact FILE or --push REGISTRY/REPO');
    const got = 'sha256:' + crypto.createHash('sha256').update(bytes).digest('hex');
    if (got !== v.digest) console.error(`sign.mjs: note: artifact is ${got}, not --digest (negative-test bundle)`);
    artifact = { data: bytes };
  } else {
    const predicate = v.predicate ? JSON.parse(fs.readFileSync(v.predicate, 'utf8')) : {};
    predicateType = v['predicate-type'];
    const subjectDigest = (v['subject-digest'] ?? v.digest).slice('sha256:'.length);
    const statement = {
      _type: INTOTO_STATEMENT_V1,
      subject: [{ name: v.repository, digest: { sha256: subjectDigest } }],
      predicateType,
      predicate,
    };
    artifact = { data: Buffer.from(JSON.stringify(statement)), type: INTOTO_PAYLOAD_TYPE };
  }

  // Who signs.
  let signer;
  let publicPEM;
  if (v.kind === 'key') {
    let priv;
    if (v.key) {
      priv = crypto.createPrivateKey(fs.readFileSync(v.key));
    } else {
      priv = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      fs.writeFileSync(path.join(v.out, 'private.pem'), priv.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    }
    signer = keySigner(priv);
    publicPEM = signer.pem;
    fs.writeFileSync(path.join(v.out, 'public.pem'), publicPEM);
  } else {
    const token = identityToken(oidcClaims(v), certTime);
    signer = new sign.FulcioSigner({
      fulcioBaseURL: URLS.fulcio,
      identityProvider: { getToken: async () => token },
    });
  }

  // Who witnesses.
  const witnesses = [];
  if (v.rekor === 'v1') witnesses.push(new LogWitness(services.rekorV1, { version: 1, entryType: v['tlog-kind'] }));
  if (v.rekor === 'v2') witnesses.push(new LogWitness(services.rekorV2, { version: 2 }));
  if (v.tsa || v.kind === 'tsa-only' || v.rekor === 'v2') {
    witnesses.push(new sign.TSAWitness({ tsaBaseURL: URLS.tsa }));
  }

  const stopMocks = serveMocks(services);
  let bundle;
  try {
    const Builder = v['message-signature'] ? sign.MessageSignatureBundleBuilder : sign.DSSEBundleBuilder;
    bundle = await new Builder({ signer, witnesses }).create(artifact);
  } finally {
    stopMocks();
  }

  // sigstore-js always makes v0.2 (x509CertificateChain) message-signature
  // bundles; rewrite to v0.3 (single certificate) unless asked not to.
  if (v['message-signature'] && !v['bundle-v02'] && bundle.verificationMaterial.content.$case === 'x509CertificateChain') {
    const leaf = bundle.verificationMaterial.content.x509CertificateChain.certificates[0];
    bundle.mediaType = bundleLib.BUNDLE_V03_MEDIA_TYPE;
    bundle.verificationMaterial.content = { $case: 'certificate', certificate: leaf };
  }
  if (v['message-signature'] && !v['bundle-v02'] && bundle.verificationMaterial.content.$case === 'publicKey') {
    bundle.mediaType = bundleLib.BUNDLE_V03_MEDIA_TYPE;
  }
  // Timestamps block is empty-but-present when no TSA was used; drop it.
  if (!bundle.verificationMaterial.timestampVerificationData?.rfc3161Timestamps?.length) {
    bundle.verificationMaterial.timestampVerificationData = undefined;
  }

  const bundleJSON = bundleLib.bundleToJSON(bundle);
  const rootJSON = trustedRoot(services);
  const bundleText = JSON.stringify(bundleJSON, null, 2) + '\n';
  fs.writeFileSync(path.join(v.out, 'bundle.json'), bundleText);
  fs.writeFileSync(path.join(v.out, 'trusted_root.json'), JSON.stringify(rootJSON, null, 2) + '\n');
  if (v['message-signature']) fs.writeFileSync(path.join(v.out, 'artifact.bin'), artifact.data);

  const summary = {
    digest: v.digest,
    subjectDigest: v['message-signature'] ? undefined : v['subject-digest'] ?? v.digest,
    kind: v.kind,
    rekor: v.rekor,
    content: bundle.content.$case,
    mediaType: bundle.mediaType,
    predicateType,
    identitySAN: v.kind === 'key' ? undefined : v['identity-san'],
    issuer: v.kind === 'key' ? undefined : v.issuer,
  };

  // Oracle.
  if (!v['no-verify']) {
    const expectMismatch = (v['subject-digest'] && v['subject-digest'] !== v.digest);
    try {
      const r = verifyBundle({
        bundle: bundleJSON,
        trustedRoot: rootJSON,
        digest: v['subject-digest'] ?? (v['message-signature'] ? 'sha256:' + crypto.createHash('sha256').update(artifact.data).digest('hex') : v.digest),
        keyPEM: publicPEM,
        san: v.kind === 'key' ? undefined : v['identity-san'],
        issuer: v.kind === 'key' ? undefined : v.issuer,
        artifact: artifact.data,
      });
      summary.verify = 'ok';
      console.log(`verify: ok ${JSON.stringify(r)}`);
      if (expectMismatch) console.log(`note: bundle names ${v['subject-digest']}, so it must NOT verify for ${v.digest}`);
    } catch (e) {
      summary.verify = `failed: ${e.message}`;
      console.log(`verify: failed: ${e.code ? e.code + ': ' : ''}${e.message}`);
      fs.writeFileSync(path.join(v.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
      process.exit(1);
    }
  }

  // Attach.
  if (v.push) {
    const descriptor = await oci.attachArtifactToImage({
      imageName: v.push,
      imageDigest: v.digest,
      artifact: Buffer.from(bundleText),
      mediaType: bundle.mediaType,
      annotations: {
        'dev.sigstore.bundle.content': v['message-signature'] ? 'message-signature' : 'dsse-envelope',
        ...(predicateType ? { 'dev.sigstore.bundle.predicateType': predicateType } : {}),
      },
      credentials: undefined,
    });
    summary.pushed = descriptor;
    console.log(`pushed: ${v.push}@${descriptor.digest} (subject ${v.digest})`);
  }

  fs.writeFileSync(path.join(v.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), v.out) || '.'}/{bundle.json,trusted_root.json,summary.json${v.kind === 'key' ? ',public.pem' : ''}}`);
}

main().catch((e) => {
  console.error(`sign.mjs: ${e.stack || e.message}`);
  if (e.cause) console.error(`cause: ${e.cause.stack || e.cause}`);
  process.exit(1);
});
