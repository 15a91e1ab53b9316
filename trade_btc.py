#!/usr/bin/env python3
"""BTCUSDC grid-martingale daemon (see live/daemon.py). `python trade_btc.py --demo` runs offline."""
import sys

from live.demo import run_demo
from live.launcher import main

if __name__ == "__main__":
    sys.exit(main("BTCUSDC", demo=run_demo))
