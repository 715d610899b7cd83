#!/usr/bin/env bash
# `make run`: the development server (uvicorn, ASGI) with its background loops beside it,
# stopped with it.
#   scripts/run_dev.sh PYTHON PORT
set -euo pipefail
PY=${1:?python}
PORT=${2:-8000}

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$PY" manage.py expire_calls --every 10 &
pids+=($!)

# Retention (transcripts, callers' data past the organization's days) and erasures
# whose wake-up was lost.
"$PY" manage.py expire_data --every 60 &
pids+=($!)

# Analyses and webhook deliveries whose wake-up was lost (a stopped `make run`), or
# whose worker died mid-run.
"$PY" manage.py wake_analyses --every 60 &
pids+=($!)
"$PY" manage.py wake_webhook_deliveries --every 60 &
pids+=($!)

# The task queue's worker: customer webhook deliveries and the rest, all but dialing.
"$PY" manage.py db_worker --queue-name '*' --exclude-queues dial --no-reload &
pids+=($!)

# Dialing phone calls: a worker of its own, so a ringing phone never holds up the rest.
"$PY" manage.py db_worker --queue-name dial --no-reload &
pids+=($!)

# uvicorn serves the ASGI application: the API, the admin and the live call streams on
# one port (streams need ASGI: README "Watching a call live"); reloaded on code changes.
# Its access line prints the query string (where a browser's EventSource puts the key):
# the log config masks it with the filter every other log has.
VENV_BIN=$(dirname "$PY")
reload_dirs=()
for dir in */; do
  if [ -f "$dir/__init__.py" ] || [ "$dir" = "templates/" ]; then reload_dirs+=(--reload-dir "$dir"); fi
done
"$VENV_BIN/uvicorn" voicecalls.asgi:application --host 127.0.0.1 --port "$PORT" \
  --http voicecalls.uvicorn_errors:JSONErrorsHttpToolsProtocol \
  --log-config scripts/uvicorn_dev_logging.json \
  --reload "${reload_dirs[@]}" --reload-include '*.html' --no-server-header &
pids+=($!)

# Whichever stops first (Ctrl-C, a crash) stops the others.
wait -n
