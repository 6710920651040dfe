#!/usr/bin/env bash
# Install Debian's Chromium (/usr/bin/chromium) for the browser test of the board report.
# Test tools' own browser downloads fail on this project's machines; Debian's package works.
# Needs root (or passwordless sudo). Never reads stdin; each apt step has a time limit.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "installing chromium needs root or passwordless sudo" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
timeout "${APT_UPDATE_TIMEOUT:-300}" "${SUDO[@]}" apt-get update -q </dev/null
timeout "${APT_INSTALL_TIMEOUT:-900}" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends chromium </dev/null
/usr/bin/chromium --version
