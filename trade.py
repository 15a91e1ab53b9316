#!/usr/bin/env python3
"""Any USDⓈ-M symbol: `python trade.py SYMBOL [--demo] [options]` (see live/daemon.py).

Its config is config_<short>.txt (BTCUSDC → btc, SOLUSDC → sol, BTCUSDT → btcusdt) and its
state, trades and logs are named after it; filters and leverage brackets come from the
exchange (exchangeInfo, leverageBracket).  trade_btc.py and trade_eth.py are this for
BTCUSDC and ETHUSDC."""
import re
import sys

from live.demo import run_demo
from live.launcher import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or not re.fullmatch(r"[A-Za-z0-9]{5,20}", sys.argv[1]):
        print("usage: trade.py SYMBOL [--demo] [options]   e.g. trade.py SOLUSDC --demo", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1].upper(), sys.argv[2:], demo=run_demo, prog="trade.py"))
