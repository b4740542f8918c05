"""What the tests share, one module per concern (a suite's own helpers stay in its folder, as
tests/drain/support.py; no test module imports another, tests/unit/test_test_imports.py checks):

- ``servers``: ``gateway serve`` as a subprocess on a free port; scaled timeouts, bounded waits
- ``fleet``: gunicorn fleets on Redis; which worker serves whom (logs, /proc)
- ``redis``: the shared Redis under a per-test key prefix, private redis-servers, the fixtures
- ``clients``: chat clients on the ``websockets`` library, a reader that never stops reading
- ``rawws``: a raw WebSocket client: handshake, masked frames, server frames, a stalled reader
- ``metrics``: /metrics samples
- ``fakes``: a socket's send side and a broker's deliver callback, for the core without sockets
- ``skips``: skip when a tool is missing, fail instead under CI
"""
