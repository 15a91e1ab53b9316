#!/usr/bin/env python3
"""Any USDⓈ-M symbol: `python trade.py SYMBOL [--demo] [options]` (see live/daemon.py).

Its config is config_<short>.txt (BTCUSDC → btc, SOLUSDC → sol, BTCUSDT → btcusdt) and its
state, trades and logs are named after it; filters and leverage brackets come from the
exchange (exchangeInfo, leverageBracket).  trade_btc.py and trade_eth.py are this for
BTCUSDC and ETHUSDC.

`python trade.py --demo --symbols BTCUSDC,ETHUSDC [options]` is the offline demo of one
account: one daemon per symbol on one local exchange and one wallet (live/demo.py)."""
import re
import sys

from live.demo import main_account, run_demo
from live.launcher import main

USAGE = ("usage: trade.py SYMBOL [--demo] [options]  or  trade.py --demo --symbols SYMBOL,SYMBOL [options]"
         "   e.g. trade.py SOLUSDC --demo")

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0].startswith("-"):         # no symbol first: the account's demo (--symbols)
        sys.exit(main_account(argv))
    if not argv or not re.fullmatch(r"[A-Za-z0-9]{5,20}", argv[0]):
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(argv[0].upper(), argv[1:], demo=run_demo, prog="trade.py"))
