"""Connecting to Milvus: ``ConnectionOptions``, ``Connection`` (connect, detect capabilities once, call).

The retry loop, failure classification and secret scrubbing live in ``_retry.py``; the Milvus Lite
in-process lock and user counting in ``lite.py``; URI parsing and redaction in ``uri.py``. pymilvus is imported here, in those two, in
``schema.py``, ``collection.py`` (and its ``_rows.py``) and in ``search/``.

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

A Milvus Lite gRPC server (``milvus_lite.server.Server`` behind ``http://...``; it answers
UNIMPLEMENTED to GetVersion) runs the same engine as a Lite file, whose readers see rows vanish while
an upsert rewrites them: every Connection of one process to such a server shares one readers-writer
lock (``lite.server_lock``), as Connections to one Lite file do. Readers in another process are not
covered: run writes and reads in one process, or use a Milvus server.

So every call made through ``Connection.call`` on a client method gets ``timeout=`` (the smaller of
``Connection.timeout`` and what is left of the retry budget), the client is built with a short
connect timeout, and the retry loop here gives up after ``RetryPolicy.total_seconds``. A call in
flight when the budget runs out may still take up to ``connect_timeout`` more.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from ..errors import ConfigError, MilvusM3Error
from . import lite
from .capabilities import LITE_CAPABILITIES, Capabilities, capabilities_for_version
from .retry import (
    RequestSize,
    RetryPolicy,
    Secrets,
    call_with_retry,
    code_name,
    disk_full_error,
    is_auth_failure,
    is_transient,
)
from .uri import check_server_uri, is_local_file_uri, redact_uri, split_credentials

__all__ = [
    "LITE_CAPABILITIES",
    "Capabilities",
    "Connection",
    "ConnectionOptions",
    "RetryPolicy",
    "capabilities_for_version",
    "is_auth_failure",
    "is_transient",
    "quiet_rpc_error_log",
    "redact_uri",
]

logger = logging.getLogger("milvus_m3.connection")

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a server to accept a connection. A refused connection fails at once anyway."""


@dataclass(frozen=True, kw_only=True)
class ConnectionOptions:
    """How to reach and talk to Milvus: credentials, database, deadlines, retries, TLS.

    token, or user and password: credentials for a server with authentication on (a token for
        user/password is "user:password"). db_name: a database other than ``default``.
    timeout: seconds one call may take (None: no deadline; a hung server then blocks forever).
    connect_timeout: seconds to wait for the server to accept a connection.
    retry: backoff and total time for transient failures.
    secure, server_pem_path, server_name, ca_pem_path, client_pem_path, client_key_path: TLS (one-way
        with a server certificate, or mutual); an https URI turns ``secure`` on.

    The token and password are kept out of the repr.
    """

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    db_name: str | None = None
    timeout: float | None = 30.0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    secure: bool | None = None
    server_pem_path: str | None = None
    server_name: str | None = None
    ca_pem_path: str | None = None
    client_pem_path: str | None = None
    client_key_path: str | None = None

    def __post_init__(self) -> None:
        if self.retry is None:  # accepted for callers that pass retry=None for "the default"
            object.__setattr__(self, "retry", RetryPolicy())
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds or None, got {self.timeout}")
        if self.connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, got {self.connect_timeout}")
        if self.token and (self.user or self.password):
            raise ConfigError(
                "give token or user/password, not both (a token for user/password is 'user:password')"
            )
        if bool(self.user) != bool(self.password):
            raise ConfigError("give user and password together (or a token)")
        mtls = (self.client_pem_path, self.client_key_path, self.ca_pem_path)
        if any(mtls) and not all(mtls):
            raise ConfigError("mutual TLS needs ca_pem_path, client_pem_path and client_key_path together")

    @classmethod
    def of(cls, options: ConnectionOptions | None = None, **option_kwargs: Any) -> ConnectionOptions:
        """``options`` (default: all defaults) with the fields named in ``option_kwargs`` replaced.

        An unknown name is a ConfigError that lists the valid ones.
        """
        unknown = sorted(set(option_kwargs) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown connection option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"the options are: {', '.join(OPTION_NAMES)}"
            )
        if options is None:
            return cls(**option_kwargs)
        if not isinstance(options, ConnectionOptions):
            raise ConfigError(f"options must be a ConnectionOptions, got {type(options).__name__}")
        return replace(options, **option_kwargs) if option_kwargs else options

    def client_kwargs(self) -> dict[str, Any]:
        """What ``MilvusClient`` is given besides the URI and timeout: only the options that are set."""
        kwargs: dict[str, Any] = {
            name: getattr(self, name) for name in _CLIENT_OPTIONS if getattr(self, name)
        }
        if self.secure is not None:
            kwargs["secure"] = self.secure
        return kwargs


OPTION_NAMES = tuple(f.name for f in fields(ConnectionOptions))
"""The field names of ConnectionOptions, in order: what ``**option_kwargs`` may name."""

_CLIENT_OPTIONS = (
    "token",
    "user",
    "password",
    "db_name",
    "server_pem_path",
    "server_name",
    "ca_pem_path",
    "client_pem_path",
    "client_key_path",
)


# ------------------------------------------------------------------------- URIs


def _uri_and_options(uri: Any, options: ConnectionOptions) -> tuple[str, ConnectionOptions]:
    """(the URI without credentials, ``options`` with the URI's credentials as the token)."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(
            "uri must be a Milvus Lite file path ending in .db or a server URI like http://localhost:19530"
        )
    if is_local_file_uri(uri):
        return uri, options
    check_server_uri(uri)
    uri, uri_cred = split_credentials(uri)
    if not uri_cred:
        return uri, options
    if options.token or options.user:
        raise ConfigError("credentials are given both in the URI and as token/user/password; give them once")
    return uri, replace(options, token=uri_cred)


# ------------------------------------------------------------------------- requests


def request_size(method: str, kwargs: dict[str, Any]) -> RequestSize | None:
    """How many queries or rows a client call carries (for the messages and the deadline rule), or None."""
    data: Any = None
    unit = "queries"
    if method == "hybrid_search":
        reqs = kwargs.get("reqs") or []
        data = getattr(reqs[0], "data", None) if reqs else None
    elif method == "search":
        data = kwargs.get("data")
    elif method in ("upsert", "insert"):
        data, unit = kwargs.get("data"), "rows"
    elif method in ("query", "get", "delete") and kwargs.get("ids") is not None:
        data, unit = kwargs.get("ids"), "ids"
    try:
        return None if data is None else RequestSize(len(data), unit)
    except TypeError:  # a single value or an iterator: no count to give
        return None


# ------------------------------------------------------------------------- pymilvus


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


@contextmanager
def quiet_rpc_error_log(method: str) -> Iterator[None]:
    """Drop pymilvus's ERROR record (with a traceback) for a failed ``method`` call made by THIS thread.

    For a failure the caller turns into an error of its own that says the fix (a raw filter the engine
    rejects): the user sees that one error, not a pymilvus traceback in the log too. Levels are not touched.
    """
    thread = threading.get_ident()
    tag = f"[{method}]"

    def keep(record: logging.LogRecord) -> bool:
        return not (record.thread == thread and tag in record.getMessage())

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


# ------------------------------------------------------------------------- Connection


class Connection:
    """One pymilvus ``MilvusClient`` plus retry, engine detection and a secret-free repr.

    uri: a Milvus Lite file (``./milvus_m3.db``) or a server URI (``http://localhost:19530``,
        ``https://host:443``; ``http://user:password@host:19530`` works too, the credentials are taken
        out of the URI and sent as a token).
    options: a ``ConnectionOptions``; ``option_kwargs`` (its field names: ``token=``, ``timeout=``,
        ``retry=``, ...) replace single fields of it. client: an already built client (tests).

    Credentials are handed to pymilvus and kept nowhere else but the options (whose repr hides them)
    and a private scrub list, which keeps them out of every message this class writes or passes on.
    """

    def __init__(
        self,
        uri: str = "./milvus_m3.db",
        options: ConnectionOptions | None = None,
        *,
        client: Any = None,
        **option_kwargs: Any,
    ) -> None:
        opts = ConnectionOptions.of(options, **option_kwargs)
        uri, opts = _uri_and_options(uri, opts)
        self.options = opts
        token_password = (opts.token or "").partition(":")[
            2
        ]  # a "user:password" token: the password alone too
        self._secrets = Secrets(
            opts.token,
            opts.password,
            f"{opts.user}:{opts.password}" if opts.user and opts.password else None,
            token_password if len(token_password) >= 4 else None,
        )
        self.uri = uri
        """The URI without credentials."""
        self.display_uri = redact_uri(uri)
        self.timeout = opts.timeout
        self.connect_timeout = float(opts.connect_timeout)
        self.retry = opts.retry
        self.db_name = opts.db_name
        self._client = client
        self._lite_file: str | None = None
        self._lite_lock: lite.ReadWriteLock | None = None
        self._capabilities: Capabilities | None = None
        self._detecting = False
        self._timeout_params: dict[str, bool] = {}
        self._kwargs = opts.client_kwargs()
        self._built_client = client is None
        if client is None:
            self._client = self.call("connect", self._connect)

    def __repr__(self) -> str:
        return f"Connection(uri={self.display_uri!r}, db_name={self.db_name!r})"

    def _connect(self) -> Any:
        MilvusClient = _import_milvus_client()

        if is_local_file_uri(self.uri):
            client, lock = lite.open_lite(MilvusClient, self.uri)
            self._lite_file = self.uri
            if self.capabilities.reads_during_writes_unsafe:
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
            self._detecting = True
            try:
                caps = self._detect()
            finally:
                self._detecting = False
            if (
                caps.reads_during_writes_unsafe
                and self._lite_lock is None
                and not is_local_file_uri(self.uri)
            ):
                # A Milvus Lite gRPC server: the same engine, so the same guard (within this process).
                self._lite_lock = lite.server_lock(self.uri)
            self._capabilities = caps
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
                if code_name(exc) == "UNIMPLEMENTED" or "unimplemented" in str(exc).lower():
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
        On an engine whose reads are unsafe during writes, a client method takes the file's lock.
        """
        own = getattr(fn, "__self__", None) is self._client
        if own and self._capabilities is None and not self._detecting and self._built_client:
            self.capabilities  # noqa: B018 - detected first: a Lite server's calls take the lock below
        lock = self._lite_lock
        if lock is not None and own:
            with lite.guard(lock, getattr(fn, "__name__", "")):
                return self._call(what, fn, args, kwargs, _retry)
        return self._call(what, fn, args, kwargs, _retry)

    def _call(
        self, what: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], retry: bool
    ) -> T:
        policy = self.retry if retry else RetryPolicy(attempts=1, total_seconds=self.retry.total_seconds)
        inject = self.timeout is not None and "timeout" not in kwargs and self._accepts_timeout(fn)
        lite_file = self._lite_file
        if lite_file is not None and getattr(fn, "__name__", "") in lite.WRITE_METHODS:
            self._refuse_a_full_disk(what, lite_file, lite.FULL_BYTES, "a write would fail")
        try:
            return call_with_retry(
                fn,
                args,
                kwargs,
                what=what,
                where=self.display_uri,
                policy=policy,
                timeout=self.timeout if inject else None,
                secrets=self._secrets,
                request=request_size(getattr(fn, "__name__", ""), kwargs),
            )
        except MilvusM3Error:
            raise
        except Exception as exc:
            if lite_file is not None:
                detail = f"the engine answered {type(exc).__name__}: {self._secrets.text(exc)}"
                try:
                    self._refuse_a_full_disk(what, lite_file, lite.NEARLY_FULL_BYTES, detail)
                except MilvusM3Error as err:
                    raise err from exc
            raise

    def _refuse_a_full_disk(self, what: str, lite_file: str, below: int, detail: str) -> None:
        """A full-disk error when the disk of the Lite file has fewer than ``below`` bytes free.

        Milvus Lite does not say ENOSPC (it answers "Unexpected error in RPC handling"), so the disk is asked.
        """
        free = lite.free_bytes(lite_file)
        if free is not None and free < below:
            raise disk_full_error(
                self.display_uri,
                what,
                f"{detail}; {free} bytes free on the disk of {os.path.abspath(lite_file)}",
            )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("close failed", exc_info=True)
        self._lite_lock = None
        if self._lite_file is not None:
            self._lite_file = None
            lite.release(self.uri)
