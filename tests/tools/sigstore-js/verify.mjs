#!/usr/bin/env node
// Usage: node verify.mjs BUNDLE TRUSTED_ROOT DIGEST [--key PUBLIC.pem]
//        [--san SAN] [--issuer ISSUER] [--artifact FILE] [--predicate-type URI]
// Prints "ok: ..." and exits 0, or "failed: ..." and exits 1.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { verifyBundle } from './lib/verify.mjs';

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      san: { type: 'string' },
      issuer: { type: 'string' },
      artifact: { type: 'string' },
      'predicate-type': { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (args.positionals.length !== 3) throw new Error('expected BUNDLE TRUSTED_ROOT DIGEST');
} catch (e) {
  console.error(`verify.mjs: ${e.message}`);
  console.error('usage: node verify.mjs BUNDLE TRUSTED_ROOT DIGEST [--key PEM] [--san X] [--issuer Y] [--artifact FILE] [--predicate-type URI]');
  process.exit(2);
}

const [bundlePath, rootPath, digest] = args.positionals;
const v = args.values;
try {
  const summary = verifyBundle({
    bundle: JSON.parse(fs.readFileSync(bundlePath, 'utf8')),
    trustedRoot: JSON.parse(fs.readFileSync(rootPath, 'utf8')),
    digest,
    keyPEM: v.key && fs.readFileSync(v.key, 'utf8'),
    san: v.san,
    issuer: v.issuer,
    artifact: v.artifact && fs.readFileSync(v.artifact),
    predicateType: v['predicate-type'],
  });
  console.log(v.json ? JSON.stringify({ ok: true, ...summary }) : `ok: ${JSON.stringify(summary)}`);
} catch (e) {
  console.log(v.json ? JSON.stringify({ ok: false, error: e.message }) : `failed: ${e.code ? e.code + ': ' : ''}${e.message}`);
  process.exit(1);
}
