#!/usr/bin/env bash
# Install Debian's Go toolchain and golang.org/x/mod (with golang.org/x/crypto), the reference
# implementation of C2SP signed notes (sumdb/note) and RFC 6962 trees (sumdb/tlog), for the
# interoperability tests (tests/test_notes_interop.py). Debian's packages put the sources under
# /usr/share/gocode, built with GO111MODULE=off GOPATH=/usr/share/gocode: no module download.
# Needs root (or passwordless sudo). Never reads stdin; each apt step has a time limit.
set -euo pipefail

NOTE=/usr/share/gocode/src/golang.org/x/mod/sumdb/note/note.go
if command -v go >/dev/null && [ -f "$NOTE" ]; then
    echo "go and golang.org/x/mod already installed: $(go version)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "installing go needs root or passwordless sudo" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
timeout "${APT_UPDATE_TIMEOUT:-300}" "${SUDO[@]}" apt-get update -q </dev/null
timeout "${APT_INSTALL_TIMEOUT:-900}" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends golang-go golang-golang-x-mod-dev golang-golang-x-crypto-dev \
    </dev/null
go version
test -f "$NOTE"
