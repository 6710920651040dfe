#!/usr/bin/env bash
# Fetch axe-core (the accessibility checker the dashboard's browser tests inject) from the npm registry
# into a cache outside the repository: ${GPUFLEET_AXE_DIR:-$HOME/.cache/gpufleet/axe-core}/axe.min.js.
# Nothing is committed and no node_modules is made. Never reads stdin; the download has a time limit.
set -euo pipefail

VERSION="${AXE_VERSION:-4}"
DIR="${GPUFLEET_AXE_DIR:-$HOME/.cache/gpufleet/axe-core}"
if [ -s "$DIR/axe.min.js" ]; then
    echo "$DIR/axe.min.js"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed (apt-get install npm)" >&2; exit 2; }
mkdir -p "$DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
( cd "$WORK" && timeout "${NPM_TIMEOUT:-300}" npm pack --silent "axe-core@$VERSION" </dev/null >/dev/null )
tar -xzf "$WORK"/axe-core-*.tgz -C "$WORK"
cp "$WORK/package/axe.min.js" "$DIR/axe.min.js.tmp"
cp "$WORK/package/LICENSE" "$DIR/LICENSE" 2>/dev/null || true
node -e 'console.log(require(process.argv[1]).version)' "$WORK/package/package.json" > "$DIR/VERSION" 2>/dev/null || true
mv "$DIR/axe.min.js.tmp" "$DIR/axe.min.js"
echo "$DIR/axe.min.js"
