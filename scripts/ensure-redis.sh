#!/usr/bin/env bash
# Makes sure a redis-server answers on 127.0.0.1:6379 for the Redis tests: installs Debian's
# package if the binary is missing (root only), starts a throwaway one (no persistence) if
# none answers. Tests use their own key prefixes or database numbers and clean up.
set -euo pipefail

answers() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null 2>&1 && answers; then
    echo "ensure-redis: redis answers on 127.0.0.1:6379"
    exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "ensure-redis: no redis-server and not root: install redis-server" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
for _ in $(seq 1 100); do
    if answers; then
        echo "ensure-redis: started redis-server on 127.0.0.1:6379"
        exit 0
    fi
    sleep 0.1
done
echo "ensure-redis: redis-server did not answer within 10 s" >&2
exit 1
