#!/usr/bin/env bash
# Start both daemons; extra arguments go to both.  --demo: the offline demo of the one account
# (BTCUSDC and ETHUSDC on one local exchange and one wallet), one process in the foreground.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [ "${1:-}" = "--demo" ]; then
  # One process, a daemon per symbol, until the data ends or Ctrl-C (it prints the account's report).
  exec "$PY" "$ROOT/trade.py" --demo --symbols BTCUSDC,ETHUSDC --root "$DATA" "${@:2}" --quiet
fi
rc=0
start_symbol btc "$@" || rc=1
start_symbol eth "$@" || rc=1
exit $rc
