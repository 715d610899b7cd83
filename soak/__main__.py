"""`make soak`: the fleet under load with faults, then the invariants and the figures.

Run under scripts/with_postgres.sh (it provides the throwaway PostgreSQL). Settings:
SOAK_CALLS (calls in flight, 200), SOAK_MINUTES (10), SOAK_FAULTS (comma-separated
names from soak/faults.py, default all), SOAK_SEED (1), SOAK_DRAIN_SECONDS (420),
SOAK_RESULTS (a path to write the results JSON to), SOAK_KEEP (keep the work
directory and its logs even when the run passed). Exit status 1 when an invariant
is violated.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import aiohttp

from soak import faults as faults_module
from soak import fleet as fleet_module
from soak import report
from soak.hostile import hostile
from soak.procs import ROOT, RssSampler, stop_all
from soak.scenario import CallRun, Target
from soak.traffic import Http, Record, keep_in_flight


def _settings() -> dict:
    names = os.environ.get("SOAK_FAULTS", ",".join(faults_module.ALL))
    return {
        "concurrency": int(os.environ.get("SOAK_CALLS", "200")),
        "minutes": float(os.environ.get("SOAK_MINUTES", "10")),
        "faults": [name for name in names.split(",") if name],
        "seed": int(os.environ.get("SOAK_SEED", "1")),
        "drain": float(os.environ.get("SOAK_DRAIN_SECONDS", "420")),
    }


def _wake_loop(fleet: fleet_module.Fleet, stop: threading.Event) -> None:
    """`wake_webhook_deliveries` and `wake_analyses` every 30 s, as cron would run them
    (README)."""
    commands = ["wake_webhook_deliveries", "wake_analyses"]
    with (fleet.work / "wake.log").open("ab") as log:
        while not stop.wait(30):
            for command in commands:
                argv = [fleet_module.PY, "manage.py", command]
                subprocess.run(argv, env=fleet.app_env(), cwd=ROOT, stdout=log, stderr=log)


async def _traffic(fleet: fleet_module.Fleet, settings: dict, record: Record, faults: list) -> None:
    state = json.loads((fleet.work / "state.json").read_text())
    target = Target(
        fleet.api_url, fleet.streams_url, fleet.control_url, state["client_key"], state["agent_key"]
    )
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        http = Http(session, record)

        async def one_call(number: int) -> None:
            record.calls.append(await CallRun(http, target, number, settings["seed"]).run())

        seconds = settings["minutes"] * 60
        background = [
            asyncio.create_task(hostile(http, target, settings["seed"], stop)),
            asyncio.create_task(
                faults_module.inject(fleet, faults, settings["seed"], record.now, stop)
            ),
        ]
        await keep_in_flight(
            concurrency=settings["concurrency"], seconds=seconds, start_call=one_call, stop=stop
        )
        record.traffic_seconds = record.now()
        stop.set()
        await asyncio.gather(*background)
        # The live streams close by themselves once their calls ended (the last within
        # the reconciliation delay); any still open then never will.
        if record.stream_tasks:
            await asyncio.wait(
                record.stream_tasks, timeout=fleet_module.RECONCILE_AFTER_SECONDS + 60
            )
        for task in record.stream_tasks:
            task.cancel()


def _livekit_stats(fleet: fleet_module.Fleet) -> dict:
    with urllib.request.urlopen(fleet.control_url + "/stats", timeout=10) as response:
        return json.loads(response.read())


def _check(fleet: fleet_module.Fleet, settings: dict, record: Record) -> dict:
    (fleet.work / "record.json").write_text(
        json.dumps({"started": record.started, "calls": record.calls})
    )
    stats = _livekit_stats(fleet)
    (fleet.work / "livekit.json").write_text(json.dumps(stats))
    argv = [fleet_module.PY, "-m", "soak.check", str(fleet.work), str(settings["drain"])]
    subprocess.run(argv, env=fleet.direct_env(), cwd=ROOT, check=True)
    checked = json.loads((fleet.work / "check.json").read_text())
    final = _livekit_stats(fleet)
    checked["livekit_failures"] = final["failures"]
    livekit = {k: v for k, v in final.items() if k not in ("given_up", "failures")}
    checked["figures"]["livekit"] = {**livekit, "given_up": len(stats["given_up"])}
    return checked


def _expire_logs(fleet: fleet_module.Fleet) -> list[str]:
    """`expire_calls` never had to repair a counter (nothing bypassed the state machine)."""
    repaired = []
    for log in fleet.work.glob("expire_*.log"):
        # By its number: other counts follow it on the line.
        repaired += [
            line
            for line in log.read_text().splitlines()
            if any(int(n) for n in re.findall(r"\bopen_counters_repaired=(\d+)", line))
        ]
    return [f"expire_calls repaired open-call counters: {repaired[:5]}"] if repaired else []


def run(work: Path, settings: dict) -> dict:
    fleet = fleet_module.start(work, settings["seed"])
    print(
        f"soak: fleet up in {work}: API {fleet.api_url} (HAProxy), streams {fleet.streams_url}",
        flush=True,
    )
    sampler = RssSampler(list(fleet.procs.values()))
    sampler.start()
    stop_wake = threading.Event()
    threading.Thread(target=_wake_loop, args=(fleet, stop_wake), daemon=True).start()
    seconds = settings["minutes"] * 60
    faults = faults_module.plan(settings["faults"], seconds, settings["seed"])
    record = Record()
    asyncio.run(_traffic(fleet, settings, record, faults))
    print(f"soak: traffic over after {record.now():.0f} s; draining, then checking", flush=True)
    checked = _check(fleet, settings, record)
    dead = [name for name, proc in fleet.procs.items() if not proc.alive()]
    stop_wake.set()
    sampler.stopped.set()
    violations = checked["violations"] + _expire_logs(fleet)
    if dead:
        violations.append(f"processes that died on their own: {dead}")
    webhooks = report.livekit_webhook_failures(checked["livekit_failures"], started=record.started)
    more, errors = report.server_errors(record, faults, extra=webhooks)
    violations += more
    more, rss = report.memory(sampler.samples, seconds)
    violations += more
    violations += [f"fault not injected: {f.name}: {f.detail}" for f in faults if not f.survived]
    if record.streams["ended"] != record.streams["opened"]:
        violations.append(f"live streams that never sent `end`: {record.streams}")
    figures = checked["figures"]
    figures.update(
        **errors, **rss, concurrency=settings["concurrency"], minutes=settings["minutes"]
    )
    figures.update(
        requests=len(record.requests),
        requests_per_second=round(len(record.requests) / record.traffic_seconds, 1),
        streams=record.streams,
        latency=report.latency(record, faults),
        restarts={name: proc.restarts for name, proc in fleet.procs.items() if proc.restarts},
    )
    return {
        "violations": violations,
        "figures": figures,
        "faults": [asdict(f) for f in faults],
        "settings": settings,
        "rss_samples": sampler.samples,
    }


def main() -> None:
    if "PGHOST" not in os.environ:
        sys.exit("soak: run it under scripts/with_postgres.sh (make soak)")
    settings = _settings()
    work = Path(tempfile.mkdtemp(prefix="voicecalls-soak."))
    work.chmod(0o755)
    started = time.monotonic()
    try:
        results = run(work, settings)
    finally:
        stop_all()
    results["figures"]["wall_seconds"] = round(time.monotonic() - started)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if os.environ.get("SOAK_RESULTS"):
        Path(os.environ["SOAK_RESULTS"]).write_text(json.dumps(results, indent=1))
    print(report.render(results), flush=True)
    if results["violations"] or os.environ.get("SOAK_KEEP"):
        print(f"soak: logs kept in {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if results["violations"] else 0)


if __name__ == "__main__":
    main()
