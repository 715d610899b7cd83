"""The benchmark's process environment: production-like settings (DEBUG off, so no
query log), throwaway secrets, plain HTTP on loopback, production logging, and the benchmark
organization exempt from the create throttle and the concurrency limit (issue 7's
limits would otherwise turn the write scenarios into 429s)."""

from __future__ import annotations

import os
import secrets

# Fixed per process tree: gunicorn workers inherit them from the runner.
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "voicecalls.settings",
    "DEBUG": "0",
    "SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
    "CRYPTOGRAPHY_KEY": "bench-" + secrets.token_urlsafe(32),
    "LIVEKIT_API_KEY": "bench-key",
    "LIVEKIT_API_SECRET": "bench-" + secrets.token_urlsafe(32),
    "SECURE_SSL_REDIRECT": "0",
    "CONN_MAX_AGE": "600",
    # bench.load.BENCH_ORG (not imported: this module is read before Django starts).
    "THROTTLE_EXEMPT_ORGANIZATIONS": "bench-a",
    "CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS": "bench-a",
}


def setup() -> None:
    """Apply the benchmark environment and start Django. It overrides the caller's
    (`make` exports DEBUG=1 for development): benchmarks measure production settings."""
    os.environ.update(BENCH_ENV)
    if "DATABASE_URL" not in os.environ or not os.environ["DATABASE_URL"].startswith("postgres"):
        raise SystemExit("bench: DATABASE_URL must point at PostgreSQL (use `make bench`).")
    import django

    django.setup()
