#!/usr/bin/env bash
# Start the ETHUSDC daemon in the background; extra arguments go to trade_eth.py.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
start_symbol eth "$@"
