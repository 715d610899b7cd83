"""Processes the soak starts: each in a session of its own (so a kill reaches its
children), logged to a file, stopped at exit; and their memory, sampled."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_RUNNING: list[Proc] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL and PgBouncer refuse to run as root: as root, run them as `postgres`."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


@dataclass
class Proc:
    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # every pid it had

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.history.append(self.popen.pid)
        if self not in _RUNNING:
            _RUNNING.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the process and its children)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            self.kill()  # children of a killed leader may linger
            return
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.popen.wait(5)
        self.kill()

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()


def stop_all() -> None:
    for proc in reversed(_RUNNING):
        proc.stop()
    _RUNNING.clear()


atexit.register(stop_all)


def children(pid: int) -> list[int]:
    """The process's descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Every `every` seconds: the RSS of every started process and its children, as
    (seconds since start, role, pid, KiB)."""

    def __init__(self, procs: list[Proc], every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.procs, self.every = procs, every
        self.samples: list[tuple[float, str, int, int]] = []
        self.started_at = time.monotonic()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            now = time.monotonic() - self.started_at
            for proc in list(self.procs):
                if not proc.alive():
                    continue
                for pid in [proc.pid, *children(proc.pid)]:
                    rss = rss_kb(pid)
                    if rss:
                        self.samples.append((round(now, 1), proc.role, pid, rss))
