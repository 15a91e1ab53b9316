#!/usr/bin/env bash
# Shared by the scripts: the project folder and its Python, from any current directory.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where state/, logs/ and trades/ live: the project folder unless GM_ROOT says otherwise.
DATA="${GM_ROOT:-$ROOT}"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi

path_of() {  # path_of pid|state|trades|log|stdout|... SYM: the name paths.py owns, under $DATA
  "$PY" "$ROOT/paths.py" --root "$DATA" "$@"
}

root_from_args() {  # sets DATA from a --root DIR / --root=DIR among the arguments
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) [ $# -ge 2 ] && DATA="$2"; shift ;;
      --root=*) DATA="${1#--root=}" ;;
    esac
    shift
  done
}

without_root() {  # sets ARGS to the arguments minus --root DIR / --root=DIR
  ARGS=(); local skip=0 a
  for a in "$@"; do
    if [ $skip = 1 ]; then skip=0; continue; fi
    case "$a" in --root) skip=1 ;; --root=*) ;; *) ARGS+=("$a") ;; esac
  done
}

is_daemon() {  # is_daemon PID: alive and really one of our daemons or demos (not a recycled pid)
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "trade"
}

short_of() {  # short_of btc|BTCUSDC|SOLUSDC: the name of its files (btc, sol, …)
  "$PY" "$ROOT/paths.py" short "$1"
}

entry_of() {  # entry_of SYM: trade_<short>.py where it exists, else trade.py SYMBOL
  local short; short="$(short_of "$1")"
  if [ -f "$ROOT/trade_$short.py" ]; then echo "$ROOT/trade_$short.py"
  else echo "$ROOT/trade.py ${1^^}"; fi
}

running_pidfile() {  # running_pidfile SHORT: the pid file of its running daemon, live or demo
  local f
  for f in "$(path_of pid "$1")" "$DATA/demo/state/$1.pid"; do
    if [ -f "$f" ] && is_daemon "$(cat "$f")"; then echo "$f"; return 0; fi
  done
  return 1
}

pid_written() {  # pid_written SHORT PID: its pid file (live or demo) names PID
  local f
  for f in "$(path_of pid "$1")" "$DATA/demo/state/$1.pid"; do
    [ "$(cat "$f" 2>/dev/null)" = "$2" ] && return 0
  done
  return 1
}

start_symbol() {  # start_symbol btc|eth|SYMBOL [args...] (--demo runs the demo in the background)
  local sym; sym="$(short_of "$1")"; local entry; entry="$(entry_of "$1")"; shift
  root_from_args "$@"
  local pidfile
  if pidfile="$(running_pidfile "$sym")"; then
    echo "$sym: already running (pid $(cat "$pidfile"))"; return 0
  fi
  mkdir -p "$DATA/logs" "$DATA/state"
  local out; out="$(path_of stdout "$sym")"
  # shellcheck disable=SC2086  # entry is "script [SYMBOL]"
  nohup "$PY" $entry --quiet --root "$DATA" "$@" >>"$out" 2>&1 &
  local pid=$!
  # The daemon writes its pid file once past its fast checks (config, keys, lock, logs): wait
  # for that or for its exit (a busy machine may take seconds to start Python; at most 60 s),
  # then 2 s more for a failure just after.
  local tries=0
  while kill -0 "$pid" 2>/dev/null && ! pid_written "$sym" "$pid" && [ "$tries" -lt 600 ]; do
    sleep 0.1; tries=$((tries + 1))
  done
  sleep 2
  if kill -0 "$pid" 2>/dev/null; then
    echo "$sym: started (pid $pid)"
  else
    echo "$sym: failed to start; last lines of $out:"; tail -n 5 "$out"; return 1
  fi
}

stop_symbol() {  # stop_symbol btc|eth|SYMBOL [--root DIR]: the live daemon or the demo
  local sym; sym="$(short_of "$1")"; shift
  root_from_args "$@"
  local pidfile
  if ! pidfile="$(running_pidfile "$sym")"; then
    echo "$sym: not running"; return 0
  fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { echo "$sym: stopped"; return 0; }; sleep 0.1; done
  echo "$sym: still running after 10 s (pid $pid)"; return 1
}
