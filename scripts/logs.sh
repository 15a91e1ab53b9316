#!/usr/bin/env bash
# Follow today's log: logs.sh [btc|eth|SYMBOL] (btc and eth when no argument); a running
# demo's log is followed instead of the live one's.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
syms=(); skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in
    --root) skip=1 ;;
    --root=*) ;;
    -*) echo "usage: logs.sh [btc|eth|SYMBOL] [--root DIR]" >&2; exit 2 ;;
    *) syms+=("$(short_of "$a")") ;;
  esac
done
[ ${#syms[@]} -gt 0 ] || syms=(btc eth)
files=()
for s in "${syms[@]}"; do
  if [ -f "$DATA/demo/state/$s.pid" ] && is_daemon "$(cat "$DATA/demo/state/$s.pid")"; then
    files+=("$("$PY" "$ROOT/paths.py" --root "$DATA/demo" log "$s")")
  else
    files+=("$(path_of log "$s")")
  fi
done
mkdir -p "$(dirname "${files[0]}")"
touch "${files[@]}"
exec tail -n 50 -F "${files[@]}"
