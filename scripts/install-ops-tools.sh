#!/usr/bin/env bash
# Installs the binaries the ops tests need: promtool and prometheus (Debian's
# `prometheus` package ships both). Idempotent and quick when already present;
# runs non-interactively as root (CI, developer machines). Services are not started.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have promtool && have prometheus; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-ops-tools: promtool/prometheus missing and not root; run: sudo $0" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run (another install step) instead of failing.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
# Install straight away when the package lists are fresh enough; refresh them only
# when the package cannot be found (e.g. a new container with empty lists).
if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt_get update -qq
fi
if ! apt_get install -y -qq --no-install-recommends prometheus >/dev/null; then
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if ! have promtool || ! have prometheus; then
    echo "install-ops-tools: prometheus package installed but promtool/prometheus not on PATH" >&2
    exit 1
fi
echo "install-ops-tools: $(promtool --version 2>&1 | head -n1)"
