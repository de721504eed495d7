"""What an ingest job may write to: its errors and state files checked, and held against other jobs.

Before anything is read or written, ``check_paths`` refuses an errors or state path that is one of the
inputs, the Milvus Lite database (or its lock file), the other of the two, or an existing file that is
not a milvus-m3 errors / state file (a job replaces or truncates only files it could have written).
``JobLock`` then holds an exclusive ``flock`` on a lock file next to each (``.NAME.lock``, left in
place: removing it would race with another job taking it) for the whole job, so that a second job on
the same state or errors file is refused while the first one runs; a killed job's locks go with it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from .readers import STDIN

__all__ = ["ERROR_KEYS", "JobLock", "check_paths", "is_errors_file", "is_state_file"]

ERROR_KEYS = frozenset({"file", "line", "id", "field", "error"})
"""The keys of one errors-file line (``RowError.to_json``)."""
_CHECKED_LINES = 1000


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def is_errors_file(path: Path) -> bool:
    """Whether ``path`` holds milvus-m3 errors lines only (its first ``_CHECKED_LINES``; empty counts)."""
    try:
        with open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if i >= _CHECKED_LINES:
                    break
                obj = json.loads(line)
                if not isinstance(obj, dict) or set(obj) != ERROR_KEYS:
                    return False
    except (OSError, ValueError):
        return False
    return True


def is_state_file(path: Path) -> bool:
    """Whether ``path`` is a milvus-m3 ingest state file (readable or not, by its shape)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        data = json.loads(head)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "version" in data and "inputs" in data and "options" in data


def check_paths(
    sources: Sequence[str],
    state: Path | None,
    errors: Path | None,
    database: str | None,
    resume: bool = False,
) -> None:
    """ConfigError when writing ``state`` or ``errors`` could destroy a file that is not the job's own.
    (With ``resume`` a state file is read first, and one that is not a state file is refused there.)"""
    db = Path(database) if database else None
    named = {"state": state, "errors": errors}
    for what, path in named.items():
        if path is None:
            continue
        flag = "--state" if what == "state" else "--errors"
        for s in sources:
            if s != STDIN and _same(path, Path(s)):
                raise ConfigError(
                    f"the {what} file {path} is the input {s}; give {flag} another path (it would be overwritten)"
                )
        if db is not None and (_same(path, db) or _same(path, db.with_name(f".{db.name}.lock"))):
            raise ConfigError(
                f"the {what} file {path} is the Milvus Lite database {db}; give {flag} another path"
            )
        if path.is_dir():
            raise ConfigError(f"the {what} file {path} is a folder; give {flag} a file path")
    if state is not None and errors is not None and _same(state, errors):
        raise ConfigError(
            f"the state and errors files are the same file {state}; give --state and --errors different paths"
        )
    if state is not None and not resume and state.exists() and not is_state_file(state):
        raise ConfigError(
            f"{state} exists and is not a milvus-m3 ingest state file; give --state another path "
            "(a job replaces only its own state file)"
        )
    if errors is not None and errors.exists() and not is_errors_file(errors):
        raise ConfigError(
            f"{errors} exists and is not a milvus-m3 errors file; give --errors another path "
            "(a job truncates only its own errors file)"
        )


class JobLock:
    """Exclusive locks on the lock files of a job's state and errors files, held until ``release``."""

    def __init__(self) -> None:
        self._held: list[IO[Any]] = []

    @staticmethod
    def lock_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.lock")

    def acquire(self, *paths: Path | None) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return
        for path in paths:
            if path is None:
                continue
            lock = self.lock_path(path)
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+")  # held open for the job's lifetime
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                who = fh.read().strip() or "another process"
                fh.close()
                self.release()
                raise ConfigError(
                    f"another ingest job ({who}) is using {path} right now; wait for it to finish, or give "
                    "this job other --state / --errors paths"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            self._held.append(fh)

    def release(self) -> None:
        held, self._held = self._held, []
        for fh in held:
            with contextlib.suppress(OSError):
                fh.close()  # closing drops the flock

    @contextlib.contextmanager
    def holding(self, *paths: Path | None) -> Iterator[None]:
        self.acquire(*paths)
        try:
            yield
        finally:
            self.release()
