"""gunicorn settings for production (`make serve`); every value can be overridden
by the environment so one file fits every deployment."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Sync workers: requests are short (no LiveKit call on the hot path; a transfer
# waits for one, see `timeout`) and the database is the bottleneck; 2 × cores + 1
# is gunicorn's own advice.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# A sync worker silent this long is killed mid-request. A call transfer waits for
# LiveKit within its request while the destination rings (at most the longest ring
# timeout, 120 s, and a margin): killed, it would be left recorded half-way.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "150"))
# A restart lets requests in flight finish this long: a transfer ringing, as above
# (give the orchestrator's own grace period as long, e.g. terminationGracePeriodSeconds).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", str(timeout)))
keepalive = 5
# Recycle workers now and then so a slow leak never becomes an outage.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = 500
# The app is loaded once, in the master, and workers fork from it: a recycled or killed
# worker serves at once instead of importing Django and the project again (~2 s of CPU
# each time, while the other workers carry its load). A new release needs the master
# restarted: `kill -HUP` starts new workers from the code the master loaded.
preload_app = os.environ.get("GUNICORN_PRELOAD_APP", "1") != "0"
# Behind a proxy that sets X-Forwarded-*; restrict in production to the proxy's address.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
# The access log must not carry credentials: no request headers, and the logger
# masks query values named like a credential and anything shaped like a key.
logger_class = "voicecalls.redaction.RedactingLogger"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'


def on_starting(server):
    """Requests gunicorn refuses itself (a header or request line over its limits,
    malformed HTTP) are answered in the API's error shape, not an HTML page. Imported
    here, in the master before any worker forks, once --chdir/--pythonpath apply."""
    from voicecalls.gunicorn_errors import answer_errors_in_json

    answer_errors_in_json()
