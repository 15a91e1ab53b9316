#!/usr/bin/env bash
# Stop the BTCUSDC daemon (SIGTERM: orders stay on the exchange unless it was started with --cancel-on-exit).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
stop_symbol btc "$@"
