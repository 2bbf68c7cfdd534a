#!/usr/bin/env python3
"""A TUF repository that publishes a Sigstore trusted root, built with python-tuf (the TUF
reference implementation), independent of the Rust TUF client portcullis uses.

    tuf_repo.py publish --dir DIR --target trusted_root.json
        first call: makes ed25519 keys for root, targets, snapshot and timestamp (kept in
        DIR/keys), signs version 1 of each role and publishes the target; later calls publish
        the new target as the next version of targets, snapshot and timestamp (root stays).
        The repository layout is what a TUF client fetches with consistent snapshots:
        DIR/repo/{1.root.json, timestamp.json, N.snapshot.json, N.targets.json,
        targets/<sha256>.trusted_root.json}.
    tuf_repo.py tamper --dir DIR
        rewrites the published target's bytes without re-signing (a hostile mirror).
    tuf_repo.py serve --dir DIR
        serves DIR/repo on 127.0.0.1 on a free port, prints "port N" and serves until killed.
"""

import argparse
import hashlib
import http.server
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "targets", "snapshot", "timestamp")
TARGET = "trusted_root.json"


def signer(keys_dir, role):
    path = os.path.join(keys_dir, f"{role}.pem")
    if os.path.exists(path):
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = Ed25519PrivateKey.generate()
        with open(path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return CryptoSigner(key)


def write(md, path):
    md.to_file(path, serializer=JSONSerializer(compact=False))


def publish(args):
    keys_dir = os.path.join(args.dir, "keys")
    repo = os.path.join(args.dir, "repo")
    os.makedirs(keys_dir, exist_ok=True)
    os.makedirs(os.path.join(repo, "targets"), exist_ok=True)
    signers = {role: signer(keys_dir, role) for role in ROLES}
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=365)
    state_path = os.path.join(args.dir, "version")
    version = int(open(state_path).read()) + 1 if os.path.exists(state_path) else 1

    if version == 1:
        root = Root(expires=expires, consistent_snapshot=True)
        for role in ROLES:
            root.add_key(signers[role].public_key, role)
        md = Metadata(root)
        md.sign(signers["root"])
        write(md, os.path.join(repo, "1.root.json"))
        # The bootstrap root a client is configured with.
        write(md, os.path.join(args.dir, "root.json"))

    with open(args.target, "rb") as f:
        data = f.read()
    targets = Targets(version=version, expires=expires)
    target = TargetFile.from_data(TARGET, data, ["sha256"])
    targets.targets[TARGET] = target
    digest = target.hashes["sha256"]
    with open(os.path.join(repo, "targets", f"{digest}.{TARGET}"), "wb") as f:
        f.write(data)
    md = Metadata(targets)
    md.sign(signers["targets"])
    write(md, os.path.join(repo, f"{version}.targets.json"))

    snapshot = Snapshot(version=version, expires=expires)
    snapshot.meta["targets.json"] = MetaFile(version=version)
    md = Metadata(snapshot)
    md.sign(signers["snapshot"])
    write(md, os.path.join(repo, f"{version}.snapshot.json"))

    timestamp = Timestamp(version=version, expires=expires)
    timestamp.snapshot_meta = MetaFile(version=version)
    md = Metadata(timestamp)
    md.sign(signers["timestamp"])
    write(md, os.path.join(repo, "timestamp.json"))

    with open(state_path, "w") as f:
        f.write(str(version))
    with open(os.path.join(args.dir, "published.json"), "w") as f:
        json.dump({"version": version, "sha256": digest}, f)
    print(f"published version {version} ({TARGET} sha256:{digest})")


def tamper(args):
    published = json.load(open(os.path.join(args.dir, "published.json")))
    path = os.path.join(args.dir, "repo", "targets", f"{published['sha256']}.{TARGET}")
    document = json.load(open(path))
    document["tampered"] = True
    with open(path, "w") as f:
        json.dump(document, f)
    print(f"tampered {path}")


def serve(args):
    directory = os.path.join(args.dir, "repo")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=directory, **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("publish")
    p.add_argument("--dir", required=True)
    p.add_argument("--target", required=True)
    p.set_defaults(run=publish)
    p = commands.add_parser("tamper")
    p.add_argument("--dir", required=True)
    p.set_defaults(run=tamper)
    p = commands.add_parser("serve")
    p.add_argument("--dir", required=True)
    p.set_defaults(run=serve)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
