#!/usr/bin/env bash
# Per symbol: running or not, position, grid, open orders, PnL today and in total, last log line.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
without_root "$@"
exec "$PY" "$ROOT/status.py" --root "$DATA" "${ARGS[@]}"
