#!/usr/bin/env bash
# The read-only dashboard in the foreground: dashboard.sh [--port 8765] [--host 127.0.0.1] [--root DIR].
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
args=(); skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in --root) skip=1 ;; --root=*) ;; *) args+=("$a") ;; esac
done
exec "$PY" "$ROOT/dashboard.py" --root "$DATA" "${args[@]}"
