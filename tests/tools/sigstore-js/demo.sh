#!/usr/bin/env bash
# End-to-end demo: start Debian's docker-registry on 127.0.0.1 with a
# throw-away config, push a tiny image with curl, sign + attach one bundle per
# supported case, check each with verify.mjs, show the referrers tag-schema
# index, stop the registry.
#
#   tests/tools/sigstore-js/demo.sh [OUT_DIR]     (default: a new temp dir)
#
# Needs: node (with `npm ci` done here), docker-registry, curl.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$(mktemp -d /tmp/sigstore-js-demo.XXXXXX)}"
mkdir -p "$OUT"
command -v docker-registry >/dev/null || {
  echo "demo.sh: docker-registry not found (apt-get install -y --no-install-recommends docker-registry)" >&2
  exit 1
}
[ -d "$HERE/node_modules" ] || { echo "demo.sh: run scripts/install-sigstore-js first" >&2; exit 1; }

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
REG="127.0.0.1:$PORT"
REPO="team/app"
mkdir -p "$OUT/registry/data"
cat >"$OUT/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $OUT/registry/data
  delete:
    enabled: true
http:
  addr: $REG
EOF
docker-registry serve "$OUT/registry/config.yml" >"$OUT/registry/log.txt" 2>&1 &
REG_PID=$!
trap 'kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$REG/v2/" >/dev/null

# --- a tiny OCI image: one empty-ish layer, a minimal config
put_blob() { # file -> prints digest
  local f="$1" d loc
  d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  loc="$(curl -fsS -X POST -D - -o /dev/null "http://$REG/v2/$REPO/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')"
  case "$loc" in http*) ;; *) loc="http://$REG$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc" >/dev/null
  echo "$d"
}
IMG="$OUT/image"; mkdir -p "$IMG"
printf 'hello from portcullis\n' >"$IMG/hello.txt"
tar -C "$IMG" -cf - hello.txt | gzip -n >"$IMG/layer.tar.gz"
LAYER_DIGEST="$(put_blob "$IMG/layer.tar.gz")"
DIFF_ID="sha256:$(gzip -dc "$IMG/layer.tar.gz" | sha256sum | cut -d' ' -f1)"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$DIFF_ID" >"$IMG/config.json"
CONFIG_DIGEST="$(put_blob "$IMG/config.json")"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
  "$CONFIG_DIGEST" "$(stat -c %s "$IMG/config.json")" "$LAYER_DIGEST" "$(stat -c %s "$IMG/layer.tar.gz")" >"$IMG/manifest.json"
DIGEST="sha256:$(sha256sum "$IMG/manifest.json" | cut -d' ' -f1)"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$IMG/manifest.json" "http://$REG/v2/$REPO/manifests/v1" >/dev/null
echo "image: $REG/$REPO:v1 = $DIGEST"
OTHER="sha256:$(printf 'some other image' | sha256sum | cut -d' ' -f1)"

STATE="$OUT/state" # one set of mock CA/TSA/log keys => one trusted_root.json for all
SAN="https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISS="https://token.actions.githubusercontent.com"
sign() { local name="$1"; shift; echo "== $name"; node "$HERE/sign.mjs" --digest "$DIGEST" --push "$REG/$REPO" --plain-http --state "$STATE" --out "$OUT/$name" "$@"; }

sign keyless-rekor1
sign keyless-rekor2 --rekor v2
sign keyless-tsa-only --kind tsa-only
sign key-rekor1 --kind key
sign keyless-slsa --predicate-type https://slsa.dev/provenance/v1 --predicate "$HERE/slsa-provenance-v1.json" --tsa
sign keyless-message-signature --message-signature
sign negative-other-subject --subject-digest "$OTHER"

echo "== verify.mjs against $DIGEST"
v() { printf '%-28s ' "$1"; shift; node "$HERE/verify.mjs" "$@" | cut -c1-150; }
set +e
for n in keyless-rekor1 keyless-rekor2 keyless-tsa-only keyless-slsa; do
  v "$n" "$OUT/$n/bundle.json" "$OUT/keyless-rekor1/trusted_root.json" "$DIGEST" --san "$SAN" --issuer "$ISS"
done
v key-rekor1 "$OUT/key-rekor1/bundle.json" "$OUT/key-rekor1/trusted_root.json" "$DIGEST" --key "$OUT/key-rekor1/public.pem"
v keyless-message-signature "$OUT/keyless-message-signature/bundle.json" "$OUT/keyless-message-signature/trusted_root.json" "$DIGEST" --artifact "$OUT/keyless-message-signature/artifact.bin" --san "$SAN"
v "negative (expect failed)" "$OUT/negative-other-subject/bundle.json" "$OUT/negative-other-subject/trusted_root.json" "$DIGEST"
set -e

TAG="${DIGEST/:/-}"
echo "== referrers API: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/$REPO/referrers/$DIGEST")"
echo "== tag-schema index $REG/$REPO:$TAG"
curl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/$REPO/manifests/$TAG" | tee "$OUT/referrers-index.json" | python3 -m json.tool
FIRST="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$OUT/referrers-index.json")"
echo "== first bundle manifest $FIRST"
curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/$REPO/manifests/$FIRST" | python3 -m json.tool
echo "outputs in $OUT"
