"""Milvus gRPC server fixtures: Milvus Lite's server binary on 127.0.0.1, on a free port.

``milvus_lite.server.Server(db_file, address="127.0.0.1:PORT")`` (milvus-lite 2.5.1) runs the same
gRPC service a Milvus server runs, over one data file, in a child process. ``LiteServer`` wraps it
with what the tests need: wait until it answers, stop (SIGTERM) or kill (SIGKILL) it, start it again
on the same file and port.

Fixtures:
    milvus_server     session-wide server; yields its URI ``http://127.0.0.1:PORT``
    server_manager    a CollectionManager on ``milvus_server``; drops every collection after the test
    lite_server       a private server (its own data file) the test may stop, kill and restart
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager
from milvus_m3.engine.connection import RetryPolicy

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiteServer:
    """A Milvus Lite gRPC server over ``db_file`` on ``127.0.0.1:port``; stoppable and restartable."""

    def __init__(self, db_file: Path, port: int | None = None) -> None:
        self.db_file = Path(db_file)
        self.port = port or free_port()
        self._server: Any = None
        self.starts = 0

    def __repr__(self) -> str:
        return f"LiteServer({self.uri!r}, running={self.running})"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        return f"http://{self.address}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return None if self._server is None else self._server._p

    @property
    def running(self) -> bool:
        p = self.process
        return p is not None and p.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        from milvus_lite.server import Server

        assert not self.running, "server already running"
        server = Server(str(self.db_file), address=self.address)
        if not server.init() or not server.start():
            server.stop()
            raise RuntimeError(f"milvus-lite server did not start on {self.address} over {self.db_file}")
        self._server = server
        self.starts += 1
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until the server answers a gRPC call (list collections)."""
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"milvus-lite server on {self.address} exited with {self.process and self.process.poll()}"
                )
            try:
                client = MilvusClient(self.uri, timeout=1.0, dedicated=True)
                try:
                    client.list_collections(timeout=2.0)
                    return
                finally:
                    client.close()
            except Exception as exc:
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"milvus-lite server on {self.address} did not answer within {timeout} s: {last}")

    def _end(self, sig: int) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        p = server._p
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        server.stop()  # releases the file lock and removes the lock file

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash or an OOM kill would."""
        self._end(signal.SIGKILL)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus gRPC server for the whole session; yields ``http://127.0.0.1:PORT``."""
    pytest.importorskip("milvus_lite.server", reason="milvus-lite provides the gRPC server binary")
    server = LiteServer(tmp_path_factory.mktemp("milvus-server") / "server.db")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def server_manager(milvus_server: str) -> Iterator[CollectionManager]:
    """A CollectionManager on the session server; every collection is dropped after the test."""
    m = CollectionManager(milvus_server, retry=RetryPolicy(attempts=5, initial_backoff=0.1, total_seconds=20))
    try:
        yield m
    finally:
        for name in m.list_collections():
            m.drop(name, missing_ok=True)
        m.close()


@pytest.fixture
def lite_server(tmp_path: Path) -> Iterator[LiteServer]:
    """A private server the test may stop, kill and restart (same data file, same port)."""
    pytest.importorskip("milvus_lite.server", reason="milvus-lite provides the gRPC server binary")
    server = LiteServer(tmp_path / "outage.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pymilvus_records() -> Iterator[list[logging.LogRecord]]:
    """Every record pymilvus logs, at DEBUG (its logger does not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            self.format(record)
            records.append(record)

    log = logging.getLogger("pymilvus")
    handler, old_level = Keep(logging.DEBUG), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
