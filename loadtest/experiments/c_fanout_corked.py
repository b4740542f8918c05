"""Experiment: :mod:`loadtest.experiments.c_fanout` with a channel's frames of one tick joined.

python -m loadtest.experiments.c_fanout_corked serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys

from gateway.cli import main
from loadtest.experiments.c_fanout import install

if __name__ == "__main__":
    install(corked=True)
    sys.exit(main(sys.argv[1:]))
