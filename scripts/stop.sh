#!/usr/bin/env bash
# Stop the daemon (or demo) of any symbol: stop.sh SYMBOL [--root DIR].
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[ $# -ge 1 ] || { echo "usage: stop.sh SYMBOL [--root DIR]" >&2; exit 2; }
stop_symbol "$@"
