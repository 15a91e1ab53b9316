#!/usr/bin/env bash
# Start both daemons; extra arguments (e.g. --demo) go to both.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [ "${1:-}" = "--demo" ]; then
  # Demos run in the foreground side by side until Ctrl-C.
  "$PY" "$ROOT/trade_btc.py" --root "$DATA" "$@" --quiet & b=$!
  "$PY" "$ROOT/trade_eth.py" --root "$DATA" "$@" --quiet & e=$!
  trap 'kill -INT $b $e 2>/dev/null' INT TERM
  wait $b; wait $e
  exit 0
fi
rc=0
start_symbol btc "$@" || rc=1
start_symbol eth "$@" || rc=1
exit $rc
