#!/usr/bin/env bash
# Start the BTCUSDC daemon in the background; extra arguments go to trade_btc.py.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
start_symbol btc "$@"
