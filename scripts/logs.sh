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
case "$sym" in
  btc|eth) files=("$(path_of log "$sym")") ;;
  all) files=("$(path_of log btc)" "$(path_of log eth)") ;;
  *) echo "usage: logs.sh [btc|eth]" >&2; exit 2 ;;
esac
touch "${files[@]}"
exec tail -n 50 -F "${files[@]}"
