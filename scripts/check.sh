#!/usr/bin/env bash
# The read-only pre-flight before going live: check.sh SYMBOL [args...] runs `trade.py SYMBOL --check`
# (trade_btc.py / trade_eth.py for btc and eth): one OK / WARN / FAIL line per check; exit 1 on a FAIL.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[ $# -ge 1 ] || { echo "usage: check.sh SYMBOL [args...]   e.g. check.sh btc, check.sh SOLUSDC" >&2; exit 2; }
entry="$(entry_of "$1")"; shift
root_from_args "$@"
# shellcheck disable=SC2086  # entry is "script [SYMBOL]"
exec "$PY" $entry --check --root "$DATA" "$@"
