// Mock Sigstore services (Fulcio CA + CT log, RFC 3161 TSA) from
// @sigstore/mock, served in-process through nock, plus the two in-process
// Rekor logs from ./tlog.mjs; and the TrustedRoot that trusts all of them.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import 'reflect-metadata'; // needed before @peculiar/x509 (tsyringe)
import nock from 'nock';
import x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import mock from '@sigstore/mock';
import protobuf from '@sigstore/protobuf-specs';
import { RekorV1Log, RekorV2Log, spkiDER } from './tlog.mjs';

const { HashAlgorithm, PublicKeyDetails, TrustedRoot } = protobuf;

export const URLS = {
  fulcio: 'https://fulcio.sigstore.mock',
  ctlog: 'https://ctfe.sigstore.mock',
  tsa: 'https://timestamp.sigstore.mock',
  rekorV1: 'https://rekor.sigstore.mock',
  rekorV2: 'https://log2025-1.rekor.sigstore.mock',
};

const KEY_NAMES = ['ca', 'ctlog', 'tsa', 'rekorV1', 'rekorV2'];

const genKey = (name) =>
  name === 'rekorV2'
    ? crypto.generateKeyPairSync('ed25519')
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });

const pemOf = (k) => k.export({ format: 'pem', type: 'pkcs8' });

function loadState(dir) {
  const file = dir && path.join(dir, 'state.json');
  if (!file || !fs.existsSync(file)) return undefined;
  const s = JSON.parse(fs.readFileSync(file, 'utf8'));
  const keys = {};
  for (const n of KEY_NAMES) {
    const privateKey = crypto.createPrivateKey(s.keys[n]);
    keys[n] = { privateKey, publicKey: crypto.createPublicKey(privateKey) };
  }
  return { keys, certs: s.certs, validFrom: new Date(s.validFrom), rekorV1TreeID: s.rekorV1TreeID };
}

// Initialise every service. `clock` is the single instant used for the
// certificate's notBefore, the SCT, the TSA genTime and the Rekor v1
// integrated time. It is applied *after* the mock has made its root
// certificates (which take `new Date()`), so a clock truncated to whole
// seconds can never fall before a root's notBefore.
export async function createServices({ stateDir, clock, negativeTsaSerial = false }) {
  const saved = loadState(stateDir);
  const keys = saved?.keys ?? Object.fromEntries(KEY_NAMES.map((n) => [n, genKey(n)]));
  const validFrom = saved?.validFrom ?? new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);

  const ctlog = await mock.initializeCTLog(keys.ctlog);
  const ca = await mock.initializeCA(keys.ca, ctlog);
  const tsa = await mock.initializeTSA(keys.tsa);
  if (saved) {
    // Reuse the persisted root certificates (same keys and names, so certs
    // issued now chain to them).
    ca.root = new x509.X509Certificate(Buffer.from(saved.certs.caRoot, 'base64'));
    tsa.rootCert = pkijs.Certificate.fromBER(Buffer.from(saved.certs.tsaRoot, 'base64'));
    tsa.intCert = pkijs.Certificate.fromBER(Buffer.from(saved.certs.tsaLeaf, 'base64'));
  }
  // Quirk work-around: the mock's services read `new Date()` per call unless
  // given a clock at construction; set them all to one instant here.
  const now = () => clock.cert;
  ca.getCurrentTime = now;
  ctlog.getCurrentTime = now;
  tsa.getCurrentTime = () => clock.tsa;
  // Quirk work-around: the mock TSA writes serialNumber 0xDEADBEEF as a DER
  // INTEGER without a leading zero, i.e. the negative number -0x21524111, in
  // every TSTInfo. Give each token a random positive serial instead, unless
  // the caller wants the mock's behaviour.
  if (!negativeTsaSerial) {
    const tstInfo = tsa.tstInfo.bind(tsa);
    tsa.tstInfo = (req) => {
      const info = tstInfo(req);
      const serial = crypto.randomBytes(8);
      serial[0] &= 0x7f;
      serial[0] |= 0x01;
      info.serialNumber = new asn1js.Integer({ valueHex: serial });
      return info;
    };
  }

  const rekorV1 = new RekorV1Log({ baseURL: URLS.rekorV1, keyPair: keys.rekorV1, clock: now });
  if (saved?.rekorV1TreeID) rekorV1.treeID = saved.rekorV1TreeID;
  const rekorV2 = new RekorV2Log({ baseURL: URLS.rekorV2, keyPair: keys.rekorV2 });

  if (stateDir && !saved) {
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(path.join(stateDir, 'state.json'), JSON.stringify({
      keys: Object.fromEntries(KEY_NAMES.map((n) => [n, pemOf(keys[n].privateKey)])),
      certs: {
        caRoot: ca.rootCertificate.toString('base64'),
        tsaRoot: tsa.rootCertificate.toString('base64'),
        tsaLeaf: tsa.intCertificate.toString('base64'),
      },
      validFrom: validFrom.toISOString(),
      rekorV1TreeID: rekorV1.treeID,
    }, null, 2) + '\n', { mode: 0o600 });
  }

  return { keys, ca, ctlog, tsa, rekorV1, rekorV2, validFrom };
}

// Serve the mock Fulcio and TSA handlers at URLS.* via nock so that the real
// @sigstore/sign FulcioSigner and TSAWitness talk to them over "HTTP".
export function serveMocks(services) {
  const adapt = (fn) => async (_uri, body) => {
    const req = typeof body === 'string' ? body : JSON.stringify(body);
    const { statusCode, response, contentType } = await fn(req);
    return [statusCode, response, { 'Content-Type': contentType || 'text/plain' }];
  };
  const fulcio = mock.fulcioHandler(services.ca);
  const tsa = mock.tsaHandler(services.tsa);
  nock(URLS.fulcio).post(fulcio.path).reply(adapt(fulcio.fn)).persist();
  nock(URLS.tsa).post(tsa.path).reply(adapt(tsa.fn)).persist();
  return () => {
    nock.cleanAll();
    nock.restore();
  };
}

export function trustedRoot(services) {
  const { ca, ctlog, tsa, rekorV1, rekorV2, validFrom } = services;
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [rekorV1.trustedRootEntry(validFrom), rekorV2.trustedRootEntry(validFrom)],
    certificateAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
      uri: URLS.fulcio,
      certChain: { certificates: [{ rawBytes: ca.rootCertificate }] },
      validFor: { start: validFrom },
    }],
    ctlogs: [{
      baseUrl: URLS.ctlog,
      hashAlgorithm: HashAlgorithm.SHA2_256,
      publicKey: {
        rawBytes: spkiDER(services.keys.ctlog.publicKey),
        keyDetails: PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
        validFor: { start: validFrom },
      },
      logId: { keyId: Buffer.from(ctlog.logID) },
    }],
    timestampAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'tsa' },
      uri: URLS.tsa,
      // signing certificate first, then the root
      certChain: { certificates: [{ rawBytes: tsa.intCertificate }, { rawBytes: tsa.rootCertificate }] },
      validFor: { start: validFrom },
    }],
  };
  return TrustedRoot.toJSON(root);
}
