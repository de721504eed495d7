"""Connection: URIs and credentials, failure classification, retries with a bounded total, version checks.

Unit tests use stub clients and pymilvus's own exception types as pymilvus 3.0.2 raises them; the last
ones run pymilvus against a closed port and a port that accepts but never answers.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any

import grpc
import pytest
from pymilvus.exceptions import MilvusException

from milvus_m3.collection.manager import CollectionManager
from milvus_m3.engine.connection import (
    LITE_CAPABILITIES,
    Connection,
    RetryPolicy,
    capabilities_for_version,
    is_auth_failure,
    is_transient,
    redact_uri,
)
from milvus_m3.errors import ConfigError, MilvusM3Error, MilvusUnavailableError
from tests.fixtures_server import free_port

SECRET = "s3cr3t-Pa55"


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type stubs
    """What grpc raises: an RpcError with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(f"<_InactiveRpcError: {code} {details}>")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def connect_failed(cause: BaseException | None = None) -> MilvusException:
    """pymilvus 3.0.2's error for a refused (or failed) connection, as raised from the gRPC error."""
    exc = MilvusException(
        code=2,
        message="Fail connecting to server on 127.0.0.1:1, illegal connection params or server unavailable",
    )
    exc.__cause__ = cause
    return exc


class StubClient:
    """A MilvusClient stand-in: methods take timeout= like pymilvus's, and record it."""

    def __init__(self, version: Any = None, plain_version: Any = None) -> None:
        self.version = version
        self.plain_version = plain_version
        self.timeouts: list[float | None] = []
        self.version_calls = 0
        self.closed = False

    def has_collection(self, collection_name: str, timeout: float | None = None, **kwargs: Any) -> bool:
        self.timeouts.append(timeout)
        return True

    def no_timeout_param(self, x: int) -> int:
        return x

    def list_collections(self, **kwargs: Any) -> list[str]:  # as in pymilvus: timeout= rides in **kwargs
        self.timeouts.append(kwargs.get("timeout"))
        return []

    def get_server_version(self, timeout: float | None = None, detail: bool = False, **kwargs: Any) -> Any:
        self.version_calls += 1
        value = self.version if detail else self.plain_version
        if isinstance(value, BaseException):
            raise value
        return value

    def close(self) -> None:
        self.closed = True


class Clock:
    """Stands in for time.monotonic and time.sleep in milvus_m3.engine.retry."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("milvus_m3.engine.retry.time.monotonic", c.monotonic)
    monkeypatch.setattr("milvus_m3.engine.retry.time.sleep", c.sleep)
    return c


def flaky(
    fails: list[BaseException], result: Any = "ok", clock: Clock | None = None, cost: float = 0.0
) -> Any:
    def fn(**kwargs: Any) -> Any:
        if clock is not None:
            clock.now += cost
        if fails:
            raise fails.pop(0)
        return result

    return fn


# --------------------------------------------------------------------- URIs and credentials


def test_redact_uri() -> None:
    assert redact_uri("http://root:Milvus@host:19530/db") == "http://***@host:19530/db"
    assert redact_uri("https://tok@host") == "https://***@host"
    assert redact_uri("http://localhost:19530") == "http://localhost:19530"
    assert redact_uri("./milvus.db") == "./milvus.db"
    assert redact_uri("http://h:notaport") == "<unparsable uri>"


def test_credentials_in_the_uri_become_a_token() -> None:
    conn = Connection(f"http://root:{SECRET}@10.0.0.1:19530/mydb", client=StubClient())
    assert conn.uri == "http://10.0.0.1:19530/mydb"
    assert conn.display_uri == "http://10.0.0.1:19530/mydb"
    assert conn._kwargs["token"] == f"root:{SECRET}"
    assert SECRET not in repr(conn) and SECRET not in str(conn)
    manager = CollectionManager(connection=conn)
    assert SECRET not in repr(manager) and SECRET not in manager.uri


def test_options_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, uri: str, **kwargs: Any) -> None:
            seen.update(kwargs, uri=uri)

    monkeypatch.setattr("pymilvus.MilvusClient", Recorder)
    conn = Connection(
        "https://milvus.example:443",
        user="alice",
        password=SECRET,
        db_name="tenant_a",
        timeout=7,
        connect_timeout=2,
        secure=True,
        server_pem_path="/certs/server.pem",
        server_name="milvus.example",
    )
    assert seen == {
        "uri": "https://milvus.example:443",
        "user": "alice",
        "password": SECRET,
        "db_name": "tenant_a",
        "secure": True,
        "server_pem_path": "/certs/server.pem",
        "server_name": "milvus.example",
        "timeout": 2.0,
        "dedicated": True,
    }
    assert SECRET not in repr(conn)
    Connection("http://h:19530", token=SECRET, ca_pem_path="ca", client_pem_path="c", client_key_path="k")
    assert seen["token"] == SECRET and seen["ca_pem_path"] == "ca" and seen["client_key_path"] == "k"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"uri": "localhost:19530"}, "http://localhost:19530"),
        ({"uri": "./data/milvus"}, "ending in .db"),
        ({"uri": "http://h:port"}, "does not parse"),
        ({"uri": "http://h:1", "token": "t", "user": "u", "password": "p"}, "not both"),
        ({"uri": "http://h:1", "user": "u"}, "together"),
        ({"uri": "http://u:p@h:1", "token": "t"}, "give them once"),
        ({"uri": "http://h:1", "ca_pem_path": "ca"}, "mutual TLS"),
        ({"uri": "http://h:1", "timeout": 0}, "timeout"),
        ({"uri": "http://h:1", "connect_timeout": -1}, "connect_timeout"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        Connection(**kwargs, client=StubClient())
    assert "p@" not in str(err.value)


# --------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "exc",
    [
        connect_failed(
            FakeRpcError(
                grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused"
            )
        ),
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"),
        FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        MilvusException(grpc.StatusCode.UNAVAILABLE, "[upsert] Retry timeout: 5s, StatusCode.UNAVAILABLE"),
        MilvusException(code=8, message="rate limit exceeded", compatible_code=49),
        MilvusException(code=1, message="proxy not healthy", compatible_code=56),
        MilvusException(code=5, message="something", retriable=True),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)
    assert not is_auth_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        MilvusException(code=1100, message="invalid parameter[expected=...]", is_input_error=True),
        MilvusException(code=100, message="collection not found[collection=docs]"),
        FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, ""),
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad"),
        ValueError("bad vector"),
        MilvusUnavailableError("ours, already final"),
        ConfigError("ours"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        # A refused Connect: pymilvus wraps the UNAUTHENTICATED gRPC error in "Fail connecting ...".
        connect_failed(
            FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "auth check failure, please check username")
        ),
        FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "auth check failure"),
        FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "PrivilegeLoad: permission deny"),
        MilvusException(code=1, message="denied", compatible_code=3),
    ],
    ids=lambda e: type(e).__name__,
)
def test_auth_failures_are_not_retried(exc: BaseException, clock: Clock) -> None:
    assert is_auth_failure(exc) and not is_transient(exc)
    conn = Connection("http://h:19530", token=SECRET, client=StubClient())
    with pytest.raises(ConfigError, match="refused the credentials for 'list'"):
        conn.call("list", flaky([exc, exc]))
    assert clock.sleeps == []


# --------------------------------------------------------------------- retries and time bounds


def test_transient_failures_are_retried_with_backoff(clock: Clock) -> None:
    policy = RetryPolicy(attempts=5, initial_backoff=0.5, multiplier=2, max_backoff=1.5, total_seconds=60)
    conn = Connection("http://h:19530", client=StubClient(), retry=policy)
    fails: list[BaseException] = [
        connect_failed(),
        FakeRpcError(grpc.StatusCode.UNAVAILABLE),
        connect_failed(),
    ]
    assert conn.call("upsert", flaky(fails)) == "ok"
    assert len(clock.sleeps) == 3
    for got, base in zip(clock.sleeps, [0.5, 1.0, 1.5], strict=False):
        assert base / 2 <= got <= base


def test_give_up_after_attempts_names_uri_and_what(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    conn = Connection(
        f"http://root:{SECRET}@db.internal:19530",
        client=StubClient(),
        retry=RetryPolicy(attempts=3, initial_backoff=0.1, total_seconds=60),
    )
    with caplog.at_level(logging.DEBUG, logger="milvus_m3"), pytest.raises(MilvusUnavailableError) as err:
        conn.call("upsert 10 rows into 'docs'", flaky([connect_failed()] * 5))
    msg = str(err.value)
    assert "http://db.internal:19530" in msg and "'upsert 10 rows into 'docs''" in msg and "3 tries" in msg
    assert "docker compose" in msg and "RetryPolicy.total_seconds" in msg
    assert isinstance(err.value, ConnectionError) and isinstance(err.value.__cause__, MilvusException)
    assert len([r for r in caplog.records if "transient failure" in r.getMessage()]) == 2
    assert SECRET not in caplog.text


def test_total_time_bounds_retries_and_cuts_call_deadlines(clock: Clock) -> None:
    class HungServer(StubClient):
        def search(self, collection_name: str, timeout: float | None = None) -> None:
            self.timeouts.append(timeout)
            clock.now += 1.0  # each try costs 1 s, then the deadline passes
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    client = HungServer()
    policy = RetryPolicy(attempts=100, initial_backoff=1, multiplier=2, max_backoff=4, total_seconds=10)
    conn = Connection("http://h:19530", client=client, timeout=30, retry=policy)
    start = clock.now
    with pytest.raises(MilvusUnavailableError, match=r"did not answer 'search' after \d+ tries in 1\d\.\d s"):
        conn.call("search", client.search, "docs")
    assert policy.total_seconds <= clock.now - start <= policy.total_seconds + 1.0
    assert client.timeouts[0] == 10  # min(timeout 30, the 10 s budget)
    deadlines = [float(t or 0) for t in client.timeouts]
    assert deadlines == sorted(deadlines, reverse=True) and min(deadlines) >= 1.0


def test_timeout_is_passed_to_client_methods(clock: Clock) -> None:
    client = StubClient()
    conn = Connection("http://h:19530", client=client, timeout=7, retry=RetryPolicy(total_seconds=60))
    conn.call("has", client.has_collection, "docs")
    conn.call("has", client.has_collection, "docs", timeout=2)  # the caller's own wins
    conn.call("list", client.list_collections)
    assert client.timeouts == [7, 2, 7]
    # Cut to the retry budget, never below MIN_CALL_TIMEOUT.
    conn2 = Connection("http://h:19530", client=client, timeout=30, retry=RetryPolicy(total_seconds=3))
    conn2.call("has", client.has_collection, "docs")
    assert client.timeouts[-1] == 3
    # Not for other functions, nor methods without a timeout parameter, nor with timeout=None.
    assert conn.call("x", client.no_timeout_param, 5) == 5
    assert conn.call("f", lambda **kw: kw) == {}
    conn3 = Connection("http://h:19530", client=client, timeout=None)
    conn3.call("has", client.has_collection, "docs")
    assert client.timeouts[-1] is None


def test_retry_policy_validation() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(total_seconds=0)
    with pytest.raises(ConfigError):
        RetryPolicy(multiplier=0.5)


# --------------------------------------------------------------------- secrets in foreign errors


def test_foreign_errors_holding_a_secret_are_scrubbed(clock: Clock) -> None:
    conn = Connection("http://h:19530", user="root", password=SECRET, client=StubClient())
    with pytest.raises(MilvusM3Error) as err:
        conn.call("connect", flaky([ValueError(f"uri: http://root:{SECRET}@h is illegal")]))
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    assert "http://***@h is illegal" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(MilvusUnavailableError) as err2:
        Connection("http://h:19530", token=SECRET, client=StubClient(), retry=RetryPolicy(attempts=1)).call(
            "x", flaky([ConnectionRefusedError(f"refused for token {SECRET}")])
        )
    assert SECRET not in str(err2.value) and err2.value.__cause__ is None
    # Errors without secrets pass through unchanged, as themselves.
    plain = MilvusException(code=100, message="collection not found")
    with pytest.raises(MilvusException) as err3:
        conn.call("describe", flaky([plain]))
    assert err3.value is plain


# --------------------------------------------------------------------- server version


def test_version_is_read_once_and_picks_the_engine() -> None:
    client = StubClient(version={"version": "v2.6.4", "deploy_mode": "STANDALONE"})
    conn = Connection("http://h:19530", client=client)
    caps = conn.capabilities
    assert caps.engine == "server" and caps.version == (2, 6, 4) and caps.deploy_mode == "STANDALONE"
    assert (
        caps.default_dense_index == "HNSW" and caps.filter_templates and "DISKANN" in caps.dense_index_types
    )
    assert conn.capabilities is caps and client.version_calls == 1


def test_lite_server_is_detected_by_its_empty_server_info() -> None:
    client = StubClient(
        version={"version": "", "deploy_mode": ""}, plain_version=FakeRpcError(grpc.StatusCode.UNIMPLEMENTED)
    )
    assert Connection("http://h:19530", client=client).capabilities == LITE_CAPABILITIES
    assert Connection("./x.db", client=StubClient()).capabilities == LITE_CAPABILITIES


def test_servers_without_build_tags_and_old_pymilvus_use_getversion() -> None:
    client = StubClient(version={"version": ""}, plain_version="v2.5.10")
    assert Connection("http://h:19530", client=client).capabilities.version == (2, 5, 10)

    class OldClient(StubClient):  # pymilvus 2.x: get_server_version(timeout=None, **kwargs) sends detail= on
        def get_server_version(
            self, timeout: float | None = None, detail: bool = False, **kwargs: Any
        ) -> Any:
            if detail:
                raise TypeError("unexpected keyword argument 'detail'")
            return "2.4.0"

    caps = Connection("http://h:19530", client=OldClient()).capabilities
    assert caps.version == (2, 4, 0) and not caps.filter_templates


@pytest.mark.parametrize("raw", ["v2.3.21", "2.2.0", "v1.1.1"])
def test_old_servers_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"needs >= 2\.4 .*Upgrade the server"):
        Connection("http://h:19530", client=StubClient(version={"version": raw})).capabilities  # noqa: B018


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        ("v2.4.0", (2, 4, 0)),
        ("2.6.4-gpu", (2, 6, 4)),
        ("v2.6.0-rc1-12-gabc", (2, 6, 0)),
        ("2.5", (2, 5, 0)),
        ("dev", (2, 6, 0)),
    ],
)
def test_version_parsing(raw: str, version: tuple[int, int, int]) -> None:
    assert capabilities_for_version(raw).version == version


def test_unreadable_version_does_not_hide_a_down_server(clock: Clock) -> None:
    client = StubClient(version=connect_failed())
    conn = Connection("http://h:19530", client=client, retry=RetryPolicy(attempts=2, initial_backoff=0.01))
    with pytest.raises(MilvusUnavailableError, match="get server info"):
        conn.capabilities  # noqa: B018


# --------------------------------------------------------------------- against real sockets


def _all_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)


def test_down_server_fails_fast_with_one_clear_error(
    caplog: pytest.LogCaptureFixture, pymilvus_records: list[logging.LogRecord]
) -> None:
    port = free_port()  # nothing listens there
    policy = RetryPolicy(attempts=4, initial_backoff=0.05, total_seconds=5)
    with caplog.at_level(logging.DEBUG), pytest.raises(MilvusUnavailableError) as err:
        CollectionManager(f"http://root:{SECRET}@127.0.0.1:{port}", retry=policy)
    # Gave up after the policy's 4 tries with 3 backoffs in between (no speed assert: machines are noisy).
    retries = [
        r for r in caplog.records if r.name.startswith("milvus_m3") and "retrying in" in r.getMessage()
    ]
    assert len(retries) == 3, [r.getMessage() for r in retries]
    msg = str(err.value)
    assert f"http://127.0.0.1:{port}" in msg and "'connect'" in msg and "4 tries" in msg
    # What pymilvus 3.0.2 raises for a refused connection:
    cause = err.value.__cause__
    assert isinstance(cause, MilvusException) and cause.code == 2
    assert f"Fail connecting to server on 127.0.0.1:{port}" in cause.message
    everything = [msg, repr(err.value), str(cause), repr(cause), caplog.text, _all_text(pymilvus_records)]
    assert not any(SECRET in text for text in everything)
    # issue 27, D: pymilvus raised that error "from" itself; the chain handed on ends.
    assert not _loops(err.value, "__cause__") and not _loops(err.value, "__context__")


def test_silent_host_is_bounded_by_connect_timeout_and_total() -> None:
    with socket.socket() as silent:  # accepts TCP, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(MilvusUnavailableError, match="Fail connecting") as err:
            Connection(
                f"http://127.0.0.1:{port}",
                connect_timeout=0.5,
                retry=RetryPolicy(attempts=10, initial_backoff=0.05, total_seconds=1.5),
            )
        elapsed = time.monotonic() - start
    # The 1.5 s budget, not the 10 attempts, ended it: fewer than 10 tries. No upper time bound here
    # (a loaded machine is slower); the lower one cannot fail from slowness: it shows the budget was used.
    tries = int(re.search(r"after (\d+) tries", str(err.value)).group(1))  # type: ignore[union-attr]
    assert tries < 10, str(err.value)
    assert elapsed >= 1.0, elapsed


# --------------------------------------------------------------------------- ConnectionOptions


def test_connection_options_are_written_once_and_keep_secrets_out_of_the_repr() -> None:
    from milvus_m3.engine.connection import OPTION_NAMES, ConnectionOptions

    opts = ConnectionOptions(token="s3cr3t-token-value", db_name="prod", timeout=5.0)
    assert "s3cr3t" not in repr(opts) and "prod" in repr(opts)
    pw = ConnectionOptions(user="alice", password="hunter2-hunter2")
    assert "hunter2" not in repr(pw) and "alice" in repr(pw)
    # every option the manager and the connection take is a field, with its default written out
    assert OPTION_NAMES == tuple(f for f in ConnectionOptions.__dataclass_fields__)
    assert ConnectionOptions().timeout == 30.0 and ConnectionOptions().retry == RetryPolicy()


def test_connection_options_by_keyword_or_object_give_the_same_connection() -> None:
    from milvus_m3.engine.connection import ConnectionOptions

    by_kw = Connection("http://h:19530", client=StubClient(), db_name="x", timeout=7.0)
    opts = ConnectionOptions(db_name="x", timeout=7.0)
    by_obj = Connection("http://h:19530", opts, client=StubClient())
    assert (by_kw.db_name, by_kw.timeout) == (by_obj.db_name, by_obj.timeout) == ("x", 7.0)
    # keywords given beside an options object replace its fields
    both = Connection("http://h:19530", opts, client=StubClient(), timeout=9.0)
    assert (both.db_name, both.timeout) == ("x", 9.0)


def test_an_unknown_connection_option_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown connection option tokn.*token") as info:
        CollectionManager("http://h:19530", tokn="abc-secret-value")
    assert "abc-secret-value" not in str(info.value)
    with pytest.raises(ConfigError, match="options must be a ConnectionOptions"):
        Connection("http://h:19530", {"token": "x"}, client=StubClient())  # type: ignore[arg-type]


# --------------------------------------------------------------------- cause chains that loop (issue 27, D)


def _loops(exc: BaseException | None, attr: str) -> bool:
    """Whether a plain walk along ``attr`` (``__cause__`` or ``__context__``) never ends."""
    for _ in range(100):
        if exc is None:
            return False
        exc = getattr(exc, attr)
    return True


def _looping(exc: MilvusException) -> Any:
    """A call that fails as pymilvus's decorators do (``raise e from e``), with a gRPC error that loops back."""

    def fn(**kwargs: Any) -> Any:
        grpc_error = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
        try:
            try:
                raise grpc_error
            except grpc.RpcError:
                raise exc from exc
        except MilvusException as e:
            grpc_error.__context__ = e  # and a loop through __context__ too
            e.__context__ = grpc_error
            raise e from e

    return fn


@pytest.mark.parametrize("transient", [True, False])
def test_no_error_out_of_a_call_has_a_cause_chain_that_loops(clock: Clock, transient: bool) -> None:
    """CRASH (issue 27, D): pymilvus raises ``e from e``; MilvusUnavailableError carried that loop, and a
    plain ``while exc: exc = exc.__cause__`` never ended (a consumer was killed at 23.9 GB)."""
    conn = Connection("http://h:19530", client=StubClient(), retry=RetryPolicy(attempts=2, total_seconds=60))
    exc = connect_failed() if transient else MilvusException(code=1100, message="invalid parameter")
    with pytest.raises(MilvusException if not transient else MilvusUnavailableError) as err:
        conn.call("search", _looping(exc))
    assert not _loops(err.value, "__cause__") and not _loops(err.value, "__context__")
    if transient:  # the useful part stays: pymilvus's error, its code and message
        cause = err.value.__cause__
        assert isinstance(cause, MilvusException) and cause.code == 2 and "Fail connecting" in cause.message
        assert "Fail connecting" in str(err.value)


def test_no_async_error_has_a_cause_chain_that_loops(clock: Clock) -> None:
    """CRASH (issue 27, D): the async retry loop (AsyncMilvusClient calls) wraps the same way."""
    import asyncio

    from milvus_m3.engine.retry import Secrets, acall_with_retry

    sync_fn = _looping(connect_failed())

    async def fn(**kwargs: Any) -> Any:
        return sync_fn(**kwargs)

    async def run() -> None:
        await acall_with_retry(
            fn,
            (),
            {},
            what="search",
            where="http://h:19530",
            policy=RetryPolicy(attempts=1, total_seconds=60),
            timeout=None,
            secrets=Secrets(),
        )

    with pytest.raises(MilvusUnavailableError) as err:
        asyncio.run(run())
    assert not _loops(err.value, "__cause__") and not _loops(err.value, "__context__")
    assert isinstance(err.value.__cause__, MilvusException)


# --------------------------------------------------------------------- disk full (issue 27, item 14)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(28, "No space left on device"),
        MilvusException(code=65535, message="write segment: No space left on device"),
        connect_failed(OSError(28, "No space left on device")),
    ],
)
def test_a_full_disk_is_named_and_never_retried(clock: Clock, exc: BaseException) -> None:
    """UNCLEAR (issue 27, item 14): a full disk was reported as the engine's 'Unexpected error in RPC
    handling' after 30 s of retries; it is one clear error on the first try, naming ENOSPC and the fix."""
    conn = Connection("http://h:19530", client=StubClient(), retry=RetryPolicy(attempts=5, total_seconds=60))
    calls: list[int] = []

    def fn(**kwargs: Any) -> Any:
        calls.append(1)
        raise exc

    with pytest.raises(MilvusM3Error) as err:
        conn.call("upsert 500 rows into 'docs'", fn)
    msg = str(err.value)
    assert calls == [1] and clock.sleeps == []
    assert not isinstance(err.value, MilvusUnavailableError)
    assert "ENOSPC" in msg and "No space left" in msg and "http://h:19530" in msg, msg
    assert "Free space on the disk" in msg and "not retried" in msg


# --------------------------------------------------------------------- a deadline on a big request (issue 27, 15)


def test_a_deadline_on_a_big_batch_names_its_size_and_timeout_and_is_not_retried(clock: Clock) -> None:
    """UNCLEAR (issue 27, item 15): a hybrid search of 10,000 queries that outlasted its deadline was
    retried whole, then reported as 'Milvus did not answer ... check the server'. It is one error on the
    first deadline, saying how many queries the request carried and naming the timeout to raise."""
    from pymilvus import AnnSearchRequest

    class SlowServer(StubClient):
        def hybrid_search(self, collection_name: str, reqs: list[Any], ranker: Any, limit: int,
                          timeout: float | None = None) -> None:  # fmt: skip
            self.timeouts.append(timeout)
            clock.now += timeout or 0
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    client = SlowServer()
    conn = Connection("http://h:19530", client=client, timeout=30, retry=RetryPolicy(total_seconds=600))
    reqs = [
        AnnSearchRequest(data=[[0.5, 0.5]] * 10_000, anns_field=f, param={}, limit=10) for f in ("d", "s")
    ]
    with pytest.raises(MilvusUnavailableError) as err:
        conn.call("hybrid search on 'docs'", client.hybrid_search, "docs", reqs=reqs, ranker=None, limit=10)
    msg = str(err.value)
    assert client.timeouts == [30] and clock.sleeps == []  # one try: the batch is not sent again
    assert (
        "10000 queries" in msg and "30 s" in msg and "--timeout" in msg and "ConnectionOptions.timeout" in msg
    )
    assert "not retried" in msg


def test_a_deadline_on_a_write_batch_names_its_rows(clock: Clock) -> None:
    """UNCLEAR (issue 27, item 15): the same for a write: the message says how many rows it carried."""

    class SlowServer(StubClient):
        def upsert(self, collection_name: str, data: list[Any], timeout: float | None = None) -> None:
            self.timeouts.append(timeout)
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    client = SlowServer()
    conn = Connection("http://h:19530", client=client, timeout=5, retry=RetryPolicy(total_seconds=600))
    with pytest.raises(MilvusUnavailableError, match=r"500 rows.*--timeout"):
        conn.call("upsert into 'docs'", client.upsert, "docs", data=[{"id": i} for i in range(500)])
    assert len(client.timeouts) == 1
