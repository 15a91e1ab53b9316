#!/usr/bin/env bash
# Stop both daemons.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
rc=0
stop_symbol btc "$@" || rc=1
stop_symbol eth "$@" || rc=1
exit $rc
