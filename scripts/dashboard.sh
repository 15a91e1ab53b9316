#!/usr/bin/env bash
# The read-only dashboard in the foreground: dashboard.sh [--port 8765] [--host 127.0.0.1] [--root DIR].
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
root_from_args "$@"
without_root "$@"
exec "$PY" "$ROOT/dashboard.py" --root "$DATA" "${ARGS[@]}"
