#!/usr/bin/env bash
# Follow today's log: logs.sh [btc|eth] (both when no argument).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
sym="all"; skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in
    btc|eth) sym="$a" ;;
    --root) skip=1 ;;
    --root=*) ;;
    *) sym="$a" ;;
  esac
done
day="$(date -u +%Y-%m-%d)"
case "$sym" in
  btc|eth) files=("$DATA/logs/grid_martingale_${sym}_${day}.log") ;;
  all) files=("$DATA/logs/grid_martingale_btc_${day}.log" "$DATA/logs/grid_martingale_eth_${day}.log") ;;
  *) echo "usage: logs.sh [btc|eth]" >&2; exit 2 ;;
esac
touch "${files[@]}"
exec tail -n 50 -F "${files[@]}"
