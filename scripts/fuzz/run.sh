#!/usr/bin/env bash
# Property-based API fuzzing (`make fuzz`): schemathesis against the committed
# openapi.yaml, on a live gunicorn server with a fake LiveKit beside it. Run it under
# scripts/with_postgres.sh (DATABASE_URL set); everything it starts it stops.
#   scripts/fuzz/run.sh VENV
set -euo pipefail
VENV=${1:?venv}
PY=$VENV/bin/python
PORT=${FUZZ_PORT:-18765}
LIVEKIT_PORT=${FUZZ_LIVEKIT_PORT:-18766}
: "${DATABASE_URL:?run under scripts/with_postgres.sh}"

WORK=$(mktemp -d /tmp/voicecalls-fuzz.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap stop EXIT

# The workflow write rate (60 a minute) would answer most generated workflow bodies
# 429 before their validation ran: raised here, so the fuzzer reaches it.
export DEBUG=1 LOG_LEVEL=WARNING LIVEKIT_URL="http://127.0.0.1:$LIVEKIT_PORT" \
  LIVEKIT_API_TIMEOUT_SECONDS=2 FUZZ_STATE="$WORK/state.json" \
  API_WORKFLOW_WRITE_RATE=1000000/minute
"$PY" manage.py migrate --noinput -v 0
"$PY" scripts/fuzz/setup.py "$FUZZ_STATE" 2>/dev/null

"$PY" -m tests.fake_livekit --port "$LIVEKIT_PORT" >"$WORK/livekit.log" 2>&1 &
pids+=($!)
GUNICORN_BIND="127.0.0.1:$PORT" WEB_CONCURRENCY=2 GUNICORN_THREADS=4 \
  "$VENV/bin/gunicorn" voicecalls.wsgi:application -c gunicorn.conf.py \
  --access-logfile "$WORK/access.log" >"$WORK/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done

status=0
"$VENV/bin/schemathesis" --config-file schemathesis.toml run openapi.yaml \
  --url "http://127.0.0.1:$PORT" || status=$?
if [ "$status" != 0 ]; then
  echo "--- server log (tail) ---"
  tail -n 60 "$WORK/server.log"
fi
exit "$status"
