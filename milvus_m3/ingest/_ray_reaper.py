"""The watchdog of a local Ray instance that a ``ray_ingest`` job started: when the driver ends without
shutting Ray down (SIGKILL, a crash), it ends the processes of that instance.

Ray fate-shares its GCS and raylet with the driver, but the raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) and idle workers notice late: after a SIGKILLed driver they were still
running 30 s later (issue 27, item 13). The watchdog is a small process (``python -I`` on this file,
standard library only, Linux ``/proc``) started after ``ray.init``: it is given the Ray processes the
driver started, follows their descendants once a second, and when its stdin ends (the driver closed it
after ``ray.shutdown``, or died) it kills those still running (each checked by its start time, never a
reused pid). Elsewhere than Linux there is no watchdog.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["Reaper"]

PROC = Path("/proc")
POLL_S = 1.0
"""How often the watchdog follows the Ray processes' descendants."""

Ident = tuple[int, int]
"""(pid, start time in clock ticks since boot): a process, never another one that reuses its pid."""


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid`` from /proc, None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return int(fields[1]), int(fields[19])


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and (got := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = got
    return out


def descendants(roots: set[Ident]) -> set[Ident]:
    """``roots`` still running and all their descendants."""
    table = _processes()
    found = {(pid, start) for pid, start in roots if table.get(pid, (0, -1))[1] == start}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid, _ in found]
    while todo:
        for child in children.get(todo.pop(), []):
            ident = (child, table[child][1])
            if ident not in found:
                found.add(ident)
                todo.append(child)
    return found


class Reaper:
    """The driver's side: ``Reaper.start(new children)`` after ``ray.init``, ``close()`` after
    ``ray.shutdown()`` (then the watchdog ends what Ray left, and exits)."""

    def __init__(self, proc: subprocess.Popen[bytes] | None) -> None:
        self.proc = proc

    @staticmethod
    def children() -> set[Ident]:
        """This process's children."""
        me = os.getpid()
        return {(pid, start) for pid, (ppid, start) in _processes().items() if ppid == me}

    @classmethod
    def start(cls, roots: set[Ident]) -> Reaper:
        if not roots or not sys.platform.startswith("linux"):
            return cls(None)
        # the file itself, isolated (-I: no PYTHONPATH, not its folder on sys.path): standard library only
        argv = [sys.executable, "-I", os.path.abspath(__file__), *(f"{p}:{s}" for p, s in sorted(roots))]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
        )
        return cls(proc)

    def close(self) -> None:
        if self.proc is None:
            return
        stdin: IO[bytes] | None = self.proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def watch(roots: set[Ident]) -> None:
    """The watchdog: follow ``roots``' descendants until stdin ends, then kill those still running."""
    seen = descendants(roots)
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
        seen |= descendants(roots | seen)
    for pid, start in seen:
        if (got := _stat(pid)) is not None and got[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the driver; it closes stdin after
    watch({(int(p), int(s)) for p, s in (arg.split(":") for arg in sys.argv[1:])})
