"""Faults injected during the run, each at a seeded random time, logged with its start
and end (the window in which 5xx are expected, and retried by the client)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from soak import fleet as fleet_module
from soak.fleet import Fleet
from soak.procs import children

ALL = (
    "kill_gunicorn_worker",
    "kill_instance",
    "kill_db_worker",
    "kill_expire_calls",
    "postgres_restart",
    "pgbouncer_pause",
    "livekit_503",
    "receiver_500",
)
# Seconds after a fault's end during which its effects (reconnects) may still show.
GRACE_SECONDS = 5.0


@dataclass
class Fault:
    name: str
    at: float  # planned, seconds since the run started
    start: float = 0.0
    end: float = 0.0
    detail: str = ""
    survived: bool = False


def plan(names: list[str], seconds: float, seed: int) -> list[Fault]:
    """Random, non-overlapping times within the first 80 % of the run."""
    rng = random.Random(seed)
    usable = seconds * 0.8
    slot = usable / max(len(names), 1)
    order = rng.sample(names, len(names))
    return [
        Fault(name, 10 + index * slot + rng.uniform(0, slot * 0.5))
        for index, name in enumerate(order)
    ]


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def _kill_gunicorn_worker(fleet: Fleet, rng: random.Random) -> str:
    master = fleet.procs[rng.choice(["app_a", "app_b"])]
    worker = rng.choice(children(master.pid))
    subprocess.run(["kill", "-9", str(worker)], check=True)
    time.sleep(3)  # the master forks a new worker
    return f"worker {worker} of {master.name}"


def _kill_instance(fleet: Fleet, rng: random.Random) -> str:
    proc = fleet.procs[rng.choice(["app_a", "app_b"])]
    proc.kill(signal.SIGKILL)
    time.sleep(5)
    proc.restarts += 1
    proc.start()
    url = f"http://127.0.0.1:{fleet.ports['app_a' if proc.name == 'app_a' else 'app_b']}/readyz"
    fleet_module.wait_for(lambda: fleet_module.ready(url), proc.name, 60)
    time.sleep(2)  # HAProxy's health check sees it back
    return f"{proc.name} (master and workers), restarted"


def _kill_db_worker(fleet: Fleet, rng: random.Random) -> str:
    """Kill a db_worker while it holds a task (a delivery in flight), then restart it."""
    name = rng.choice(["db_worker_1", "db_worker_2"])
    proc, worker_id = fleet.procs[name], f"soak-db-{name[-1]}"
    query = (
        "SELECT count(*) FROM django_tasks_database_dbtaskresult "
        f"WHERE status = 'RUNNING' AND worker_ids ? '{worker_id}'"
    )
    deadline, busy = time.monotonic() + 20, False
    while time.monotonic() < deadline and not busy:
        out = subprocess.run(["psql", "-XAtc", query], capture_output=True, text=True)
        busy = out.stdout.strip() not in ("", "0")
    proc.kill(signal.SIGKILL)
    time.sleep(2)
    proc.restarts += 1
    proc.start()
    return f"{name} ({'mid-delivery' if busy else 'idle: no task in 20 s'}), restarted"


def _kill_expire_calls(fleet: Fleet, rng: random.Random) -> str:
    proc = fleet.procs[rng.choice(["expire_1", "expire_2"])]
    proc.kill(signal.SIGKILL)
    time.sleep(5)
    proc.restarts += 1
    proc.start()
    return f"{proc.name}, restarted after 5 s"


def _postgres_restart(fleet: Fleet, rng: random.Random) -> str:
    fleet_module.pg_restart(fleet)
    return "pg_ctl restart -m fast"


def _pgbouncer_pause(fleet: Fleet, rng: random.Random) -> str:
    fleet_module.pgbouncer_pause(fleet, 5)
    return "PAUSE 5 s, RESUME"


def _livekit_503(fleet: Fleet, rng: random.Random) -> str:
    _post(fleet.control_url + "/fail", {"seconds": 30})
    time.sleep(30)
    return "Twirp answers 503 for 30 s"


def _receiver_500(fleet: Fleet, rng: random.Random) -> str:
    _post(fleet.receiver_url + "/_control/fail", {"seconds": 60})
    time.sleep(60)
    return "receiver answers 500 for 60 s"


ACTIONS: dict[str, Callable[[Fleet, random.Random], str]] = {
    name: globals()[f"_{name}"] for name in ALL
}


async def inject(
    fleet: Fleet, faults: list[Fault], seed: int, now: Callable[[], float], stop: asyncio.Event
) -> None:
    """Run each fault at its time (in a thread: they block), logging its window."""
    rng = random.Random(seed + 1)
    for fault in faults:
        delay = fault.at - now()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except TimeoutError:
                pass
        fault.start = now()
        print(f"soak: {fault.start:7.1f}s fault {fault.name} ...", flush=True)
        try:
            fault.detail = await asyncio.to_thread(ACTIONS[fault.name], fleet, rng)
            fault.survived = True
        except Exception as exc:  # the fault itself failed: report it, go on
            fault.detail = f"injection failed: {exc!r}"
        fault.end = now()
        print(f"soak: {fault.end:7.1f}s fault {fault.name} over: {fault.detail}", flush=True)
