#!/usr/bin/env python3
"""ETHUSDC grid-martingale daemon (see live/daemon.py). `python trade_btc.py --demo` runs offline."""
import sys

from live.demo import run_demo
from live.launcher import main

if __name__ == "__main__":
    sys.exit(main("ETHUSDC", demo=run_demo))
