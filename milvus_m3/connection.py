"""Connecting to Milvus: engine detection, capabilities, retries with backoff, secret-free reprs.

Only this module, ``collection.py`` and ``search.py`` import pymilvus.

What pymilvus 3.0.2 does when the server is away (measured against Milvus Lite's gRPC server,
tests/unit/test_connection.py and tests/server/test_server.py keep it true):

- connection refused (nothing listens, or the server was stopped or killed, even in the middle of a
  call): ``MilvusException(code=2, "Fail connecting to server on HOST:PORT, illegal connection params
  or server unavailable")`` within milliseconds, from ``MilvusClient(...)`` and from every call
  (pymilvus's own retry loop first tries to reconnect, and gives up at once on a refused connection);
- a host that accepts TCP but does not answer (a firewall, a hung proxy): the same exception after
  the connect timeout; a frozen server answers a call with ``grpc.RpcError`` DEADLINE_EXCEEDED after
  the call's ``timeout=``, and without one a call waits until gRPC's keepalive gives up (measured
  here: 60 s, once 6 minutes), then fails with UNAVAILABLE "Stream removed (ping timeout)";
- a server that answers UNAVAILABLE itself (a proxy during a rolling restart): pymilvus retries up to
  75 times (about 3.5 minutes) unless the call has ``timeout=``.

So every call made through ``Connection.call`` on a client method gets ``timeout=`` (the smaller of
``Connection.timeout`` and what is left of the retry budget), the client is built with a short
connect timeout, and the retry loop here gives up after ``RetryPolicy.total_seconds``. A call in
flight when the budget runs out may still take up to ``connect_timeout`` more.
"""

from __future__ import annotations

import base64
import inspect
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from .capabilities import LITE_CAPABILITIES, Capabilities, capabilities_for_version
from .errors import ConfigError, MilvusM3Error, MilvusUnavailableError

__all__ = [
    "LITE_CAPABILITIES",
    "Capabilities",
    "Connection",
    "RetryPolicy",
    "capabilities_for_version",
    "is_auth_failure",
    "is_transient",
    "redact_uri",
]

logger = logging.getLogger("milvus_m3.connection")
logger.addHandler(logging.NullHandler())

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a server to accept a connection. A refused connection fails at once anyway."""

MIN_CALL_TIMEOUT = 1.0
"""The shortest per-call deadline handed to pymilvus, even when the retry budget is nearly spent."""

_SCHEMES = ("http", "https", "tcp", "unix")

_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
_AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})

_TRANSIENT_MARKERS = (
    "unavailable",
    "deadline exceeded",
    "deadline_exceeded",
    "fail connecting",
    "failed to connect",
    "connection refused",
    "connection reset",
    "socket closed",
    "service not ready",
    "server is not ready",
    "not ready",
    "ratelimit",
    "rate limit",
    "broken pipe",
    "channel closed",
    "cannot invoke rpc on closed channel",
)

_AUTH_MARKERS = (
    "unauthenticated",
    "auth check failure",
    "authentication fail",
    "fail to authenticate",
    "invalid token",
    "incorrect username or password",
    "username or password",
    "permission denied",
    "privilege not exist",
)

# Milvus's legacy ErrorCode values (common.proto), which pymilvus keeps as MilvusException.compatible_code.
_PERMISSION_DENIED = 3
_TRANSIENT_COMPAT_CODES = frozenset({49, 56, 57})  # RateLimit, NotReadyServe, NotReadyCoordActivating


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures (server down, restarting, overloaded).

    attempts: tries in all (1 = no retry). total_seconds: no new try starts once this much time has
    passed; each try's deadline is cut to what is left of it (but not below ``MIN_CALL_TIMEOUT``).
    With the defaults a down server is given up on after about 12 to 24 seconds (8 tries).
    """

    attempts: int = 8
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    multiplier: float = 2.0
    total_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.total_seconds <= 0:
            raise ConfigError("RetryPolicy backoffs must be >= 0 and total_seconds > 0")
        if self.multiplier < 1:
            raise ConfigError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier}")

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based), with jitter in [50%, 100%]."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


# ------------------------------------------------------------------------- URIs and secrets


def redact_uri(uri: str) -> str:
    """The URI without any user:password part, safe to log or show."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "<unparsable uri>"
    if parts.username or parts.password or "@" in parts.netloc:
        host = parts.hostname or ""
        if port:
            host = f"{host}:{port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return uri


def _split_credentials(uri: str) -> tuple[str, str | None]:
    """(the URI without user:password, "user:password" or "token" from it or None)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    cred = unquote(user) + (":" + unquote(password) if sep else "")
    return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), cred or None


def is_local_file_uri(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def _code_name(exc: BaseException) -> str:
    """The gRPC status name of a grpc.RpcError ("UNAVAILABLE"), or of a MilvusException built from one."""
    code = getattr(exc, "code", None)
    try:
        value = code() if callable(code) else code
    except Exception:  # noqa: BLE001 - a broken error object tells nothing
        return ""
    name = getattr(value, "name", None)
    return str(name) if name else ""


def _chain(exc: BaseException, depth: int = 4) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (pymilvus wraps gRPC errors in MilvusException)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and depth > 0 and id(cur) not in seen:
        yield cur
        seen.add(id(cur))
        cur = cur.__cause__
        depth -= 1


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server refused the credentials (or the user lacks a privilege).

    A refused Connect reaches us as ``MilvusException("Fail connecting ...")`` raised from a
    ``grpc.RpcError`` UNAUTHENTICATED, so the cause chain is read too.
    """
    if isinstance(exc, MilvusM3Error):
        return False
    for e in _chain(exc):
        if _code_name(e) in _AUTH_CODES or getattr(e, "compatible_code", None) == _PERMISSION_DENIED:
            return True
        details = getattr(e, "details", None)
        text = str(e).lower()
        if callable(details):
            with suppress(Exception):  # a broken error object tells nothing more
                text += " " + str(details()).lower()
        if any(marker in text for marker in _AUTH_MARKERS):
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry may cure: the server is down, restarting or overloaded."""
    if isinstance(exc, MilvusM3Error) or is_auth_failure(exc):
        return False
    if getattr(exc, "is_input_error", False) is True:
        return False
    if getattr(exc, "retriable", False) is True or isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for e in _chain(exc):
        if _code_name(e) in _TRANSIENT_CODES or getattr(e, "compatible_code", None) in _TRANSIENT_COMPAT_CODES:
            return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class _Secrets:
    """Strings that must never be shown, and the means to scrub them from foreign text."""

    __slots__ = ("_values",)

    def __init__(self, *values: str | None) -> None:
        found: set[str] = set()
        for v in values:
            if not v:
                continue
            found.add(v)
            found.add(base64.b64encode(v.encode()).decode())  # the gRPC authorization header
        # Longest first, so "user:pw" is replaced before "pw".
        self._values = tuple(sorted(found, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"<{len(self._values)} secrets>"

    def __bool__(self) -> bool:
        return bool(self._values)

    def scrub(self, text: str) -> str:
        for v in self._values:
            text = text.replace(v, "***")
        return text

    def leak_in(self, text: str) -> bool:
        return any(v in text for v in self._values)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


@contextmanager
def _quiet_unimplemented_version_log() -> Iterator[None]:
    """Drop pymilvus's ERROR record (with traceback) for the GetVersion that Milvus Lite does not implement.

    That answer is expected here (it is how a Lite server is told from a real one); levels are not touched.
    """

    def keep(record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("get_server_version" in msg and "UNIMPLEMENTED" in msg)

    log = logging.getLogger("pymilvus.decorators")
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _pymilvus_major() -> int:
    try:
        import pymilvus

        return int(str(getattr(pymilvus, "__version__", "2")).split(".")[0])
    except (ImportError, ValueError):
        return 2


# ------------------------------------------------------------------------ Milvus Lite in one process

_WRITE_METHODS = frozenset({
    "upsert", "insert", "delete", "create_collection", "drop_collection", "create_index", "drop_index",
    "flush", "load_collection", "release_collection", "create_partition", "drop_partition",
})
"""Client methods that change a Lite file. Measured on milvus-lite 2.5.1: reads running during an
upsert of existing ids see the rows vanish (count 0), and an id-filtered search during one can crash
the embedded engine; so within a process, writes to one Lite file run alone and reads share."""


class _ReadWriteLock:
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


_lite_guard = threading.Lock()
_lite_locks: dict[str, _ReadWriteLock] = {}
_lite_users: dict[str, int] = {}


def _lite_key(uri: str) -> str:
    return os.path.realpath(os.path.abspath(uri))


def _lite_acquire(uri: str) -> _ReadWriteLock:
    key = _lite_key(uri)
    with _lite_guard:
        _lite_users[key] = _lite_users.get(key, 0) + 1
        return _lite_locks.setdefault(key, _ReadWriteLock())


def _lite_release(uri: str) -> None:
    """The last user of a Lite file in this process stops its engine, so another process can open it."""
    key = _lite_key(uri)
    with _lite_guard:
        left = _lite_users.get(key, 0) - 1
        if left > 0:
            _lite_users[key] = left
            return
        _lite_users.pop(key, None)
        try:
            from milvus_lite.server_manager import server_manager_instance

            if key in getattr(server_manager_instance, "_servers", {}):
                server_manager_instance.release_server(key)
        except Exception:
            logger.debug("could not stop the Milvus Lite engine for %s", key, exc_info=True)


def _import_milvus_client() -> Any:
    """pymilvus parses $MILVUS_URI when first imported and fails on a Lite path such as
    ./milvus_m3.db (which our CLI and docs use): hide the variable during that import."""
    saved = os.environ.get("MILVUS_URI")
    hide = saved is not None and "://" not in saved
    if hide:
        del os.environ["MILVUS_URI"]
    try:
        from pymilvus import MilvusClient
    finally:
        if hide and saved is not None:
            os.environ["MILVUS_URI"] = saved
    return MilvusClient


class Connection:
    """One pymilvus ``MilvusClient`` plus retry, engine detection and a secret-free repr.

    uri: a Milvus Lite file (``./milvus_m3.db``) or a server URI (``http://localhost:19530``,
        ``https://host:443``; ``http://user:password@host:19530`` works too, the credentials are taken
        out of the URI and sent as a token). token, or user and password: credentials for a server with
        authentication on. db_name: a database other than ``default``. secure, server_pem_path,
        server_name, ca_pem_path, client_pem_path, client_key_path: TLS (one-way with a server
        certificate, or mutual); an https URI turns ``secure`` on.
    timeout: seconds one call may take (None: no deadline; a hung server then blocks forever).
    connect_timeout: seconds to wait for the server to accept a connection.
    retry: backoff and total time for transient failures.

    Credentials are handed to pymilvus and kept nowhere else but a private scrub list, which keeps them
    out of every message this class writes or passes on.
    """

    def __init__(
        self,
        uri: str = "./milvus_m3.db",
        *,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        db_name: str | None = None,
        timeout: float | None = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry: RetryPolicy | None = None,
        secure: bool | None = None,
        server_pem_path: str | None = None,
        server_name: str | None = None,
        ca_pem_path: str | None = None,
        client_pem_path: str | None = None,
        client_key_path: str | None = None,
        client: Any = None,
    ) -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise ConfigError("uri must be a Milvus Lite file path ending in .db or a server URI like http://localhost:19530")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout}")
        if connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, got {connect_timeout}")
        uri_cred: str | None = None
        if not is_local_file_uri(uri):
            _check_server_uri(uri)
            uri, uri_cred = _split_credentials(uri)
        if token and (user or password):
            raise ConfigError("give token or user/password, not both (a token for user/password is 'user:password')")
        if bool(user) != bool(password):
            raise ConfigError("give user and password together (or a token)")
        if uri_cred and (token or user):
            raise ConfigError("credentials are given both in the URI and as token/user/password; give them once")
        if uri_cred:
            token = uri_cred
        self._secrets = _Secrets(token, password, f"{user}:{password}" if user and password else None)
        self.uri = uri
        """The URI without credentials."""
        self.display_uri = redact_uri(uri)
        self.timeout = timeout
        self.connect_timeout = float(connect_timeout)
        self.retry = retry or RetryPolicy()
        self.db_name = db_name
        self._client = client
        self._lite_lock: _ReadWriteLock | None = None
        self._capabilities: Capabilities | None = None
        self._timeout_params: dict[str, bool] = {}
        self._kwargs: dict[str, Any] = {}
        if token:
            self._kwargs["token"] = token
        if user:
            self._kwargs["user"] = user
        if password:
            self._kwargs["password"] = password
        if db_name:
            self._kwargs["db_name"] = db_name
        if secure is not None:
            self._kwargs["secure"] = secure
        tls_files = {
            "server_pem_path": server_pem_path,
            "server_name": server_name,
            "ca_pem_path": ca_pem_path,
            "client_pem_path": client_pem_path,
            "client_key_path": client_key_path,
        }
        for key, value in tls_files.items():
            if value:
                self._kwargs[key] = value
        if (client_pem_path or client_key_path or ca_pem_path) and not (client_pem_path and client_key_path and ca_pem_path):
            raise ConfigError("mutual TLS needs ca_pem_path, client_pem_path and client_key_path together")
        if client is None:
            self._client = self.call("connect", self._connect)

    def __repr__(self) -> str:
        return f"Connection(uri={self.display_uri!r}, db_name={self.db_name!r})"

    def _connect(self) -> Any:
        MilvusClient = _import_milvus_client()

        if is_local_file_uri(self.uri):
            # Milvus Lite: pymilvus starts the embedded engine for this file (no auth, no TLS there).
            lock = _lite_acquire(self.uri)
            try:
                client = MilvusClient(self.uri)
            except Exception as exc:
                _lite_release(self.uri)
                if "open local milvus failed" in str(exc).lower():
                    raise MilvusUnavailableError(
                        f"Milvus Lite could not open {self.uri}: another process probably has it open (Milvus Lite "
                        "allows one process per file). Stop that process, wait for it to finish, or run a Milvus "
                        "server (docker/docker-compose.yml) for several processes."
                    ) from exc
                raise
            self._lite_lock = lock
            return client
        kwargs = dict(self._kwargs)
        kwargs["timeout"] = self.connect_timeout
        if _pymilvus_major() >= 3:
            # Our own channel: closed by close(), and its connect timeout is ours (pymilvus 3 shares
            # channels per address and token otherwise).
            kwargs["dedicated"] = True
        return MilvusClient(self.uri, **kwargs)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def capabilities(self) -> Capabilities:
        """Read once: Lite answers UNIMPLEMENTED to GetVersion; a server gives its version."""
        if self._capabilities is None:
            self._capabilities = self._detect()
        return self._capabilities

    def _detect(self) -> Capabilities:
        if is_local_file_uri(self.uri):
            return LITE_CAPABILITIES
        # The Connect answer carries the build tag ("v2.6.4") and deploy mode; Milvus Lite leaves them empty.
        info: Any = None
        try:
            info = self.call("get server info", self._client.get_server_version, detail=True)
        except TypeError:  # pymilvus 2.x: no detail=
            info = None
        raw = str(info.get("version") or "") if isinstance(info, dict) else ""
        mode = str(info.get("deploy_mode") or "") if isinstance(info, dict) else ""
        if not raw:
            try:
                with _quiet_unimplemented_version_log():
                    raw = str(self.call("get server version", self._client.get_server_version))
            except MilvusM3Error:
                raise
            except Exception as exc:
                if _code_name(exc) == "UNIMPLEMENTED" or "unimplemented" in str(exc).lower():
                    logger.debug("%s does not implement GetVersion: a Milvus Lite server", self.display_uri)
                    return LITE_CAPABILITIES
                raise
        return capabilities_for_version(raw, uri=self.display_uri, deploy_mode=mode)

    def _accepts_timeout(self, fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` is a method of our client that takes ``timeout=``.

        Some MilvusClient methods (``list_collections``, ``list_indexes``, the database calls) take only
        ``**kwargs``, which they hand to the gRPC layer, whose methods all take ``timeout=``; without one a
        call to a frozen server waits for the gRPC keepalive (measured: 60 s to 6 minutes).
        """
        if self._client is None or getattr(fn, "__self__", None) is not self._client:
            return False
        name = getattr(fn, "__name__", "")
        if name not in self._timeout_params:
            try:
                params = inspect.signature(fn).parameters.values()
            except (TypeError, ValueError):
                self._timeout_params[name] = False
            else:
                self._timeout_params[name] = any(
                    p.name == "timeout" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params
                )
        return self._timeout_params[name]

    def call(self, what: str, fn: Callable[..., T], *args: Any, _retry: bool = True, **kwargs: Any) -> T:
        """Run ``fn`` with retries on transient failures.

        A method of ``self.client`` gets ``timeout=`` (unless given): ``self.timeout``, cut to what is
        left of ``retry.total_seconds``. Transient failures that outlast the policy become one
        MilvusUnavailableError; refused credentials a ConfigError; other errors pass through unchanged
        unless their text holds a secret, in which case a scrubbed MilvusM3Error replaces them.
        """
        lock = self._lite_lock
        if lock is not None and getattr(fn, "__self__", None) is self._client:
            guard = lock.write() if getattr(fn, "__name__", "") in _WRITE_METHODS else lock.read()
            with guard:
                return self._call(what, fn, args, kwargs, _retry)
        return self._call(what, fn, args, kwargs, _retry)

    def _call(self, what: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], retry: bool) -> T:
        policy = self.retry if retry else RetryPolicy(attempts=1, total_seconds=self.retry.total_seconds)
        start = time.monotonic()
        attempt = 0
        inject = self.timeout is not None and "timeout" not in kwargs and self._accepts_timeout(fn)
        while True:
            attempt += 1
            if inject and self.timeout is not None:
                left = policy.total_seconds - (time.monotonic() - start)
                kwargs["timeout"] = max(MIN_CALL_TIMEOUT, min(self.timeout, left))
            try:
                return fn(*args, **kwargs)
            except MilvusM3Error:
                raise
            except Exception as exc:
                if is_auth_failure(exc):
                    self._raise(ConfigError(
                        f"Milvus at {self.display_uri} refused the credentials for '{what}' "
                        f"({type(exc).__name__}: {self._text(exc)}). Check the token or user/password (the "
                        "server runs with common.security.authorizationEnabled) and the user's privileges."
                    ), exc)
                if not is_transient(exc):
                    if self._leaks(exc):
                        self._raise(MilvusM3Error(
                            f"Milvus at {self.display_uri}: '{what}' failed ({type(exc).__name__}: {self._text(exc)})"
                        ), exc)
                    raise
                elapsed = time.monotonic() - start
                if attempt >= policy.attempts or elapsed >= policy.total_seconds:
                    self._raise(MilvusUnavailableError(
                        f"Milvus at {self.display_uri} did not answer '{what}' after {attempt} tries in "
                        f"{elapsed:.1f} s ({type(exc).__name__}: {self._text(exc)}). Check that the server is "
                        "running and reachable (docker compose -f docker/docker-compose.yml ps; curl "
                        "http://HOST:9091/healthz), the URI and port, TLS settings and credentials; or "
                        "raise RetryPolicy.total_seconds."
                    ), exc)
                wait = min(policy.delay(attempt), max(0.0, policy.total_seconds - elapsed))
                logger.warning(
                    "Milvus %s: transient failure on %s (try %d/%d), retrying in %.2f s: %s",
                    self.display_uri, what, attempt, policy.attempts, wait, self._text(exc),
                )
                time.sleep(wait)

    def _text(self, exc: BaseException) -> str:
        return self._secrets.scrub(_short(exc))

    def _leaks(self, exc: BaseException) -> bool:
        return any(self._secrets.leak_in(f"{e!s} {e!r} {e.args!r}") for e in _chain(exc))

    def _raise(self, err: MilvusM3Error, exc: BaseException) -> NoReturn:
        """Raise ``err`` from ``exc``, or from nothing when ``exc`` (or its causes) would show a secret."""
        if self._leaks(exc):
            raise err from None
        raise err from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("close failed", exc_info=True)
        if self._lite_lock is not None:
            self._lite_lock = None
            _lite_release(self.uri)


def _check_server_uri(uri: str) -> None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(
            f"uri {redact_uri(uri)!r} does not parse; give a Milvus Lite file (./milvus_m3.db) or a server URI "
            "like http://localhost:19530"
        ) from None
    if parts.scheme.lower() not in _SCHEMES or (parts.scheme.lower() != "unix" and not parts.hostname):
        raise ConfigError(
            f"uri {redact_uri(uri)!r} is neither a Milvus Lite file (ending in .db) nor a server URI; "
            "give e.g. ./milvus_m3.db or http://localhost:19530 (https://... for TLS)"
        )
