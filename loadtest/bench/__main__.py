"""``python -m loadtest.bench``: the command line lives in loadtest/bench/cli.py."""

from loadtest.bench.cli import main

raise SystemExit(main())
