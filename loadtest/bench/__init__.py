"""Fan-out benchmark: the gateway against the seed's naive chat, in one invocation.

    python -m loadtest.bench --scenario fanout --subscribers 1000 --publishers 10 --rate max
    python -m loadtest.bench --scenario all          # every target, writes loadtest/RESULTS.md

Scenarios (each starts its own servers, pinned with taskset: servers on core 0, this
generator on core 1; ``--attach URL`` measures a server someone else started instead):

* ``fanout``  N subscribers + P publishers in one room, rate ``max`` (closed loop: at most
  ``--window`` messages in flight) or a fixed total rate in messages/s;
* ``latency`` the same at a fixed rate (default 40 msg/s to 1000 subscribers = 40k deliveries/s);
* ``stalled`` N=100 with one subscriber that stops reading, against a control run without;
* ``idle``    K idle connections: RSS per connection, pings answered, idle CPU;
* ``workers`` ``gateway serve --workers 2`` + Redis, fan-out at max rate, vs one worker;
* ``closeness`` issue 19's targets in one invocation: full rate, 40 msg/s and idle against
  Bun's pub/sub (loadtest/bun/) and the seed, ``--workers 2`` + a private Redis against one
  worker.

Figures: deliveries/s and end-to-end latency (p50/p99/max, from the send timestamp each
message carries to its arrival) measured by the generator; server CPU seconds per delivery
from /proc/<pid>/stat (utime+stime of the server and all its children); server RSS per
connection; and the generator's own CPU so a reader can see whether it saturated.

The package, one concern a module: ``model`` (what a run is given and what it measured),
``chat`` and ``idle`` (one measured run against one server), ``scenarios`` (which servers and
runs a scenario makes), ``closeness`` and ``closeness_report`` (issue 19's runs, targets table
and RESULTS.md block), ``targets`` and ``report`` (RESULTS.md's generated block), ``plots`` (its
figures as PNGs in loadtest/plots/), ``readback`` (the block's figures read back, for the plots
when a run's raw JSON is gone), ``cli``.
"""
