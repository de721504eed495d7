"""Milvus Lite in one process: one read/write lock per Lite file, and counting its users.

Measured on milvus-lite 2.5.1: reads running during an upsert of existing ids see the rows vanish
(count 0), and an id-filtered search during one can crash the embedded engine; so within a process,
writes to one Lite file run alone and reads share (``Capabilities.reads_during_writes_unsafe``).
Milvus Lite lets one process open a file (``Capabilities.one_process_per_file``): the last user of a
file in this process stops its engine, so another process can open it.

Private to ``connection.py``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MilvusUnavailableError

__all__ = [
    "WRITE_METHODS",
    "ReadWriteLock",
    "acquire",
    "check_lite_path",
    "free_bytes",
    "guard",
    "open_lite",
    "release",
    "server_lock",
]

logger = logging.getLogger("milvus_m3.connection")

WRITE_METHODS = frozenset(
    {
        "upsert",
        "insert",
        "delete",
        "create_collection",
        "drop_collection",
        "create_index",
        "drop_index",
        "flush",
        "load_collection",
        "release_collection",
        "create_partition",
        "drop_partition",
    }
)
"""Client methods that change a Lite file: they take the file's lock for writing, every other one for reading."""

FULL_BYTES = 1 << 20
"""Free bytes below which a write to a Lite file is refused at once as a full disk (ENOSPC)."""

NEARLY_FULL_BYTES = 64 << 20
"""Free bytes below which a failed call on a Lite file is reported as a full disk. Milvus Lite answers
ENOSPC with gRPC UNKNOWN "Unexpected error in RPC handling" (measured on milvus-lite 2.5.1 over a 2 MiB
tmpfs, after pymilvus retried it for the whole call deadline), so the disk itself is asked."""


def free_bytes(uri: str) -> int | None:
    """Bytes free (to this user) on the disk that holds the Lite file ``uri``; None when unknown."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(uri)))
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return int(st.f_bavail) * int(st.f_frsize)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def guard(lock: ReadWriteLock, method: str) -> AbstractContextManager[None]:
    """The write side of ``lock`` for a client method in ``WRITE_METHODS``, the read side for any other."""
    return lock.write() if method in WRITE_METHODS else lock.read()


_guard = threading.Lock()
_locks: dict[str, ReadWriteLock] = {}
_users: dict[str, int] = {}


def _key(uri: str) -> str:
    return os.path.realpath(os.path.abspath(uri))


def acquire(uri: str) -> ReadWriteLock:
    """Count one more user of the Lite file ``uri`` in this process; its lock (one per file)."""
    key = _key(uri)
    with _guard:
        _users[key] = _users.get(key, 0) + 1
        return _locks.setdefault(key, ReadWriteLock())


def release(uri: str) -> None:
    """The last user of a Lite file in this process stops its engine, so another process can open it."""
    key = _key(uri)
    with _guard:
        left = _users.get(key, 0) - 1
        if left > 0:
            _users[key] = left
            return
        _users.pop(key, None)
        try:
            from milvus_lite.server_manager import server_manager_instance

            if key in getattr(server_manager_instance, "_servers", {}):
                server_manager_instance.release_server(key)
        except Exception:
            logger.debug("could not stop the Milvus Lite engine for %s", key, exc_info=True)


def _import_milvus_lite() -> None:
    """Import milvus_lite without its ``pkg_resources is deprecated`` UserWarning (milvus-lite 2.5.1 imports
    pkg_resources at the top of its package; the warning concerns milvus-lite's maintainers, not our users).
    Only that warning, only during this import; pymilvus imports the package itself when it is not here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            pass  # pymilvus says how to install it when it needs it


_server_locks: dict[str, ReadWriteLock] = {}


def server_lock(uri: str) -> ReadWriteLock:
    """The lock of a Milvus Lite gRPC server at ``uri`` (``milvus_lite.server.Server`` behind a URI):
    its engine has the same unsafe reads during writes, and every Connection of this process to it
    shares this lock. Readers in other processes are not covered (documented in connection.py)."""
    with _guard:
        return _server_locks.setdefault(uri, ReadWriteLock())


_LITE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")
_LITE_NAME_MAX = 36


def check_lite_path(uri: str) -> None:
    """ConfigError, with the fix, for a Lite file milvus-lite 2.5.1 cannot open: a folder that does not
    exist, a file name outside ``[a-zA-Z0-9.-_]`` or longer than 36 characters (milvus-lite raises a bare
    RuntimeError for those, and reports a missing folder as a failed open)."""
    path = Path(uri).absolute()
    if not path.parent.is_dir():
        raise ConfigError(
            f"the folder of the Milvus Lite file {uri} ({path.parent}) does not exist; create it "
            f"(mkdir -p {path.parent}) or give a path in an existing folder"
        )
    name = path.name
    if not _LITE_NAME.match(name) or len(name) > _LITE_NAME_MAX:
        raise ConfigError(
            f"Milvus Lite cannot use the file name {name!r}: it takes letters, digits, '.', '-' and '_' only, "
            f"at most {_LITE_NAME_MAX} characters; rename it (e.g. {_suggest(name)!r})"
        )


def _suggest(name: str) -> str:
    stem = re.sub(r"[^a-zA-Z0-9.\-_]", "_", name.removesuffix(".db"))[: _LITE_NAME_MAX - 3]
    return f"{stem or 'milvus_m3'}.db"


def open_lite(milvus_client: Any, uri: str) -> tuple[Any, ReadWriteLock]:
    """A ``MilvusClient`` on the Lite file ``uri`` (pymilvus starts the embedded engine; no auth, no TLS
    there), counted as a user of the file, and the file's lock. ``release(uri)`` when done with it."""
    _import_milvus_lite()
    check_lite_path(uri)
    lock = acquire(uri)
    try:
        client = milvus_client(uri)
    except Exception as exc:
        release(uri)
        if "open local milvus failed" in str(exc).lower():
            raise MilvusUnavailableError(
                f"Milvus Lite could not open {uri}: another process probably has it open (Milvus Lite "
                "allows one process per file). Stop that process, wait for it to finish, or run a Milvus "
                "server (docker/docker-compose.yml) for several processes."
            ) from exc
        raise
    return client, lock
