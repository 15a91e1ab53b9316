#!/usr/bin/env bash
# Start the daemon of any symbol in the background: start.sh SYMBOL [trade.py arguments, e.g. --demo].
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[ $# -ge 1 ] || { echo "usage: start.sh SYMBOL [args...]   e.g. start.sh SOLUSDC --demo" >&2; exit 2; }
start_symbol "$@"
