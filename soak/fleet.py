"""The fleet, as real processes on loopback: PgBouncer (transaction mode) in front of the
throwaway PostgreSQL of scripts/with_postgres.sh, two gunicorn instances behind HAProxy
(round robin), the live streams' ASGI service, two `db_worker`s, two `expire_calls
--every` loops, the soak's LiveKit and the customer webhook receiver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from soak.procs import ROOT, Proc, as_postgres, free_port

PY = sys.executable
VENV_BIN = Path(PY).parent
RETRY_SCHEDULE = "0,1,2,5,10,20,30,30,30,30,30,30,60,60"
RECONCILE_AFTER_SECONDS = 60


@dataclass
class Fleet:
    work: Path
    seed: int
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    direct_url: str = ""
    pg_root: str = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['haproxy']}"

    @property
    def streams_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['streams']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['livekit_control']}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['receiver']}"

    def app_env(self, **extra: str) -> dict[str, str]:
        """Production settings (DEBUG off, real secrets), everything through PgBouncer."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            DEBUG="0",
            SECRET_KEY="soak-secret-key-" + "s" * 40,
            CRYPTOGRAPHY_KEY="soak-cryptography-key-" + "c" * 40,
            LIVEKIT_API_KEY="APIsoak",
            LIVEKIT_API_SECRET="soak-livekit-secret-" + "l" * 30,
            LIVEKIT_URL=f"http://127.0.0.1:{self.ports['livekit']}",
            LIVEKIT_API_TIMEOUT_SECONDS="2",
            SECURE_SSL_REDIRECT="0",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{self.ports['pgbouncer']}/voicecalls",
            DATABASE_LISTEN_URL=self.direct_url,
            DATABASE_PREPARE_THRESHOLD="none",
            # PgBouncer drops them as startup options (its ignore_startup_parameters
            # below; else it refuses the connection): README "Operating".
            DATABASE_LOCK_TIMEOUT_SECONDS="0",
            DATABASE_STATEMENT_TIMEOUT_SECONDS="0",
            WEBHOOKS_ALLOW_PRIVATE_URLS="1",
            WEBHOOKS_RETRY_SCHEDULE=RETRY_SCHEDULE,
            WEBHOOKS_END_REPORT_DELAY="5",
            WEBHOOKS_TIMEOUT_SECONDS="5",
            CALL_RECONCILE_AFTER_SECONDS=str(RECONCILE_AFTER_SECONDS),
            THROTTLE_EXEMPT_ORGANIZATIONS="soak",
            CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS="soak",
            STREAMS_PER_ORGANIZATION="5000",
            LOG_LEVEL="WARNING",
            LOG_FORMAT="plain",
            VOICECALLS_ENV_FILE=os.devnull,
        )
        env.update(extra)
        return env

    def direct_env(self) -> dict[str, str]:
        """The same settings straight to PostgreSQL (migrations, seeding, checking)."""
        return self.app_env(DATABASE_URL=self.direct_url, DATABASE_PREPARE_THRESHOLD="5")

    def add(self, name: str, role: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, role, argv, env, self.work / f"{name}.log").start()
        self.procs[name] = proc
        return proc


def start(work: Path, seed: int) -> Fleet:
    fleet = Fleet(work=work, seed=seed)
    fleet.direct_url = os.environ["DATABASE_URL"]
    fleet.pg_root = os.environ["PGHOST"]
    names = ("pgbouncer", "haproxy", "app_a", "app_b", "streams", "livekit", "livekit_control")
    fleet.ports = {name: free_port() for name in (*names, "receiver")}
    env = fleet.direct_env()
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True
    )
    state = work / "state.json"
    subprocess.run(
        [PY, "-m", "soak.seed", state, fleet.receiver_url + "/hooks"], env=env, cwd=ROOT, check=True
    )
    _pgbouncer_start(fleet)
    _apps_start(fleet)
    _haproxy_start(fleet)
    return fleet


def _pgbouncer_start(fleet: Fleet) -> None:
    home = fleet.work / "pgbouncer"
    home.mkdir()
    (home / "userlist.txt").write_text('"postgres" ""\n')
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
voicecalls = host={fleet.pg_root} dbname=voicecalls user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {fleet.ports["pgbouncer"]}
unix_socket_dir =
auth_type = trust
auth_file = {home}/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 60
reserve_pool_size = 10
server_reset_query =
; After a failed login (PostgreSQL restarting) PgBouncer refuses every client for this
; long: the default, 15 s, turns a 1-second restart into 15 s of errors.
server_login_retry = 1
ignore_startup_parameters = extra_float_digits,options
"""
    )
    if os.getuid() == 0:
        shutil.chown(home, "postgres")
    fleet.add(
        "pgbouncer",
        "pgbouncer",
        as_postgres(["pgbouncer", str(home / "pgbouncer.ini")]),
        dict(os.environ),
    )
    wait_for(lambda: _psql(fleet, "SHOW VERSION") is not None, "PgBouncer", 20)


def _psql(fleet: Fleet, command: str) -> str | None:
    """A command on PgBouncer's admin console, or None when it does not answer."""
    argv = ["psql", "-X", "-h", "127.0.0.1", "-p", str(fleet.ports["pgbouncer"]), "-U", "postgres"]
    result = subprocess.run(
        [*argv, "pgbouncer", "-Atc", command],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "PGCONNECT_TIMEOUT": "3"},
    )
    return result.stdout if result.returncode == 0 else None


def _apps_start(fleet: Fleet) -> None:
    for name in ("app_a", "app_b"):
        env = fleet.app_env(
            GUNICORN_BIND=f"127.0.0.1:{fleet.ports[name]}",
            WEB_CONCURRENCY="2",
            GUNICORN_THREADS="4",
        )
        gunicorn = [
            str(VENV_BIN / "gunicorn"),
            "voicecalls.wsgi:application",
            "-c",
            "gunicorn.conf.py",
        ]
        fleet.add(name, "gunicorn", [*gunicorn, "--access-logfile", "/dev/null"], env)
    streams_env = fleet.app_env(
        STREAMS_BIND=f"127.0.0.1:{fleet.ports['streams']}", STREAMS_WORKERS="1"
    )
    streams = [
        str(VENV_BIN / "gunicorn"),
        "voicecalls.asgi:application",
        "-c",
        "gunicorn.streams.conf.py",
    ]
    fleet.add("streams", "streams", [*streams, "--access-logfile", "/dev/null"], streams_env)
    env = fleet.app_env()
    for index in (1, 2):
        worker = ["manage.py", "db_worker", "--queue-name", "*", "--exclude-queues", "dial"]
        argv = [PY, *worker, "--no-reload", "--worker-id", f"soak-db-{index}"]
        fleet.add(f"db_worker_{index}", "db_worker", argv, env)
        fleet.add(
            f"expire_{index}",
            "expire_calls",
            [PY, "manage.py", "expire_calls", "--every", "2"],
            env,
        )
    livekit = [PY, "-m", "soak.livekit", "--port", str(fleet.ports["livekit"])]
    livekit += ["--control-port", str(fleet.ports["livekit_control"]), "--seed", str(fleet.seed)]
    livekit += ["--webhook-url", f"{fleet.api_url}/api/v1/webhooks/livekit"]
    livekit += ["--key", env["LIVEKIT_API_KEY"], "--secret", env["LIVEKIT_API_SECRET"]]
    fleet.add("livekit", "fake_livekit", livekit, env)
    secret = fleet.work / "webhook-secret"
    secret.write_text(json.loads((fleet.work / "state.json").read_text())["webhook_secret"])
    receiver = [PY, "-m", "soak.receiver", "--port", str(fleet.ports["receiver"])]
    receiver += ["--secret-file", str(secret), "--log", str(fleet.work / "receiver.jsonl")]
    fleet.add("receiver", "receiver", receiver, env)
    for name in ("app_a", "app_b", "streams"):
        wait_for(lambda name=name: ready(f"http://127.0.0.1:{fleet.ports[name]}/readyz"), name, 60)


def _haproxy_start(fleet: Fleet) -> None:
    config = fleet.work / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    retries 3
    option redispatch
    option http-buffer-request
    retry-on conn-failure empty-response
frontend api
    bind 127.0.0.1:{fleet.ports["haproxy"]}
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /healthz
    # A server takes no more requests than its threads serve (2 workers x 4 threads):
    # the rest wait here, so a health check never queues behind a flood and times out
    # (a 1 s check timing out under load marked both servers down: 503s).
    timeout queue 60s
    timeout check 10s
    default-server inter 2s fall 3 rise 1 maxconn 8
    server a 127.0.0.1:{fleet.ports["app_a"]} check
    server b 127.0.0.1:{fleet.ports["app_b"]} check
"""
    )
    fleet.add("haproxy", "haproxy", ["haproxy", "-db", "-f", str(config)], dict(os.environ))
    wait_for(lambda: ready(f"{fleet.api_url}/readyz"), "HAProxy", 20)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(check: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"soak: {what} did not come up within {seconds:g} s")


def pg_restart(fleet: Fleet) -> None:
    """Restart PostgreSQL (fast shutdown: every connection is cut)."""
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    argv = [str(pg_ctl), "-D", f"{fleet.pg_root}/data", "-l", f"{fleet.pg_root}/server.log"]
    subprocess.run(
        as_postgres([*argv, "-m", "fast", "-w", "restart"]), check=True, capture_output=True
    )


def pgbouncer_pause(fleet: Fleet, seconds: float) -> None:
    _psql(fleet, "PAUSE voicecalls")
    time.sleep(seconds)
    _psql(fleet, "RESUME voicecalls")
