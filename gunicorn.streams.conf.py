"""gunicorn settings of the live call streams' service (`make serve-streams`): the same
Django project under ASGI (voicecalls.asgi) with uvicorn workers, serving only
`/api/v1/calls/{id}/stream` and `/admin/calls/call/{id}/stream/` (the proxy routes
them here). The API stays on sync workers (gunicorn.conf.py): README "Watching a call
live" says why. Every value can be overridden by the environment."""

import multiprocessing
import os

bind = os.environ.get("STREAMS_BIND", "0.0.0.0:8001")
# uvicorn's worker, answering what it cannot parse in the error shape (see the module).
worker_class = "voicecalls.uvicorn_errors.StreamsWorker"
# One event loop per core: a loop holds a thousand idle streams (≈ 145 KiB each, most of
# it a parked thread: bench/README.md) and one LISTEN connection to the database.
workers = int(os.environ.get("STREAMS_WORKERS", multiprocessing.cpu_count()))
# A stream is a long response: the worker's heartbeat to the arbiter is what `timeout`
# watches (uvicorn workers notify while they serve), not the length of a request.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On a restart open streams are cut; their clients reconnect with Last-Event-ID.
graceful_timeout = int(os.environ.get("STREAMS_GRACEFUL_TIMEOUT", "5"))
keepalive = 5
# Never recycled by request count: a recycled worker cuts every stream it holds.
max_requests = 0
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# uvicorn logs each request line (no headers) through gunicorn's handlers, which mask
# a key put in the query string (a browser's EventSource sends no Authorization header).
accesslog = "-"
errorlog = "-"
logger_class = "voicecalls.redaction.RedactingLogger"
