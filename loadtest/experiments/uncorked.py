"""Experiment: the gateway without write corking, to measure what corking wins in the same run.

Shipped, a socket's second and later frames of one event-loop tick wait for one combined write
(gateway/server/corking.py). Here every frame is written to its socket at once, one ``send()`` per
delivery, as the gateway did before corking.

    python -m loadtest.experiments.uncorked serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys

from gateway.cli import main
from gateway.server.wsprotocol import GatewayWebSocketProtocol


def _write_at_once(self: GatewayWebSocketProtocol, data: bytes) -> bool:
    if self.close_sent or self.disconnected or not self.writable.is_set():
        return False
    self._raw_transport.write(data)
    return True


def install() -> None:
    GatewayWebSocketProtocol.write_now = _write_at_once  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
