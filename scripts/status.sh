#!/usr/bin/env bash
# Per symbol: running or not, position, grid, open orders, PnL today and in total, last log line.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
args=(); skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in --root) skip=1 ;; --root=*) ;; *) args+=("$a") ;; esac
done
exec "$PY" "$ROOT/status.py" --root "$DATA" "${args[@]}"
