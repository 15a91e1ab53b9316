#!/usr/bin/env bash
# Follow today's log: logs.sh [btc|eth] (both when no argument).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
day="$(date -u +%Y-%m-%d)"
case "${1:-all}" in
  btc|eth) files=("$DATA/logs/grid_martingale_${1}_${day}.log") ;;
  all) files=("$DATA/logs/grid_martingale_btc_${day}.log" "$DATA/logs/grid_martingale_eth_${day}.log") ;;
  *) echo "usage: logs.sh [btc|eth]" >&2; exit 2 ;;
esac
touch "${files[@]}"
exec tail -n 50 -F "${files[@]}"
