#!/usr/bin/env bash
# Installs what tests/ops/test_ops_docker_engine.py needs to build and run the image for real:
# Debian's docker.io (dockerd, containerd, runc and a docker CLI) and debootstrap (the local
# base image; no registry is reachable). Idempotent and quick when already present; runs
# non-interactively as root. The test starts a dockerd of its own on a private socket; it does
# not use or need a system-wide one.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have dockerd && have docker && have debootstrap; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-docker: dockerd/debootstrap missing and not root; run: sudo $0" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run (another install step) instead of failing.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }
packages=(docker.io debootstrap)
# Refresh the package lists only when a package cannot be found or installed as they are.
if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
    apt_get update -qq
fi
if ! apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

for tool in dockerd docker debootstrap; do
    if ! have "$tool"; then
        echo "install-docker: packages installed but $tool is not on PATH" >&2
        exit 1
    fi
done
echo "install-docker: $(dockerd --version), debootstrap $(dpkg-query -W -f '${Version}' debootstrap)"
