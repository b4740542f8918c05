#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/browser), if it is not there yet.
# Idempotent and quick when Chromium is present; non-interactive. Playwright drives this system
# Chromium through executable_path: `playwright install` (a browser download) is never used.
# Override the binary the tests use with CHROMIUM_PATH=/path/to/chromium.
set -euo pipefail

find_chromium() {
    if [[ -n "${CHROMIUM_PATH:-}" && -x "${CHROMIUM_PATH}" ]]; then
        echo "${CHROMIUM_PATH}"
        return 0
    fi
    local candidate
    for candidate in /usr/lib/chromium/chromium /usr/bin/chromium /usr/bin/chromium-browser; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    echo "install-browser: Chromium present at $path"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no Chromium and no apt-get here; install Chromium and set CHROMIUM_PATH" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-browser: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

echo "install-browser: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
"${SUDO[@]}" apt-get "${apt_opts[@]}" update -qq
"${SUDO[@]}" apt-get "${apt_opts[@]}" install -y -qq chromium </dev/null

if path="$(find_chromium)"; then
    echo "install-browser: Chromium installed at $path"
else
    echo "install-browser: chromium package installed but no binary found" >&2
    exit 1
fi
