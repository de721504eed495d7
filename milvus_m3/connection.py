"""Connecting to Milvus: engine detection, capabilities, retries with backoff, secret-free reprs.

Only this module, ``collection.py`` and ``search.py`` import pymilvus.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError, MilvusM3Error, MilvusUnavailableError

__all__ = ["Capabilities", "Connection", "RetryPolicy", "redact_uri"]

logger = logging.getLogger("milvus_m3.connection")
logger.addHandler(logging.NullHandler())

T = TypeVar("T")

MIN_SERVER_VERSION = (2, 4, 0)
"""Sparse vectors and hybrid search arrived in Milvus 2.4."""

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


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures (server down, restarting, overloaded).

    attempts: tries in all (1 = no retry). total_seconds: give up once this much time has passed.
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


@dataclass(frozen=True)
class Capabilities:
    """What the engine behind a URI can do. Milvus Lite (embedded or served) lacks a few server features."""

    engine: str  # "lite" or "server"
    version: tuple[int, int, int] | None
    filter_templates: bool
    dense_index_types: tuple[str, ...]
    default_dense_index: str

    @property
    def is_lite(self) -> bool:
        return self.engine == "lite"


LITE_CAPABILITIES = Capabilities(
    engine="lite",
    version=None,
    filter_templates=False,
    dense_index_types=("AUTOINDEX", "FLAT", "IVF_FLAT"),
    default_dense_index="AUTOINDEX",
)


def server_capabilities(version: tuple[int, int, int]) -> Capabilities:
    return Capabilities(
        engine="server",
        version=version,
        filter_templates=version >= (2, 5, 0),
        dense_index_types=(
            "AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "SCANN",
        ),
        default_dense_index="HNSW",
    )


def redact_uri(uri: str) -> str:
    """The URI without any user:password part, safe to log or show."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return uri


def is_local_file_uri(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry may cure: the server is down, restarting or overloaded."""
    if isinstance(exc, MilvusM3Error):
        return False
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            name = str(getattr(code(), "name", code()))
        except Exception:  # noqa: BLE001 - a broken error object is not transient information
            name = ""
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"):
            return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def _parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class Connection:
    """One pymilvus ``MilvusClient`` plus retry, engine detection and a secret-free repr.

    Credentials are handed to pymilvus and kept nowhere else on this object.
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
        retry: RetryPolicy | None = None,
        secure: bool | None = None,
        server_pem_path: str | None = None,
        server_name: str | None = None,
        client: Any = None,
    ) -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise ConfigError("uri must be a Milvus Lite file path ending in .db or a server URI like http://localhost:19530")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout}")
        self.uri = uri
        self.display_uri = redact_uri(uri)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.db_name = db_name
        self._client = client
        self._capabilities: Capabilities | None = None
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
        if server_pem_path:
            self._kwargs["server_pem_path"] = server_pem_path
        if server_name:
            self._kwargs["server_name"] = server_name
        if client is None:
            self._client = self.call("connect", self._connect)

    def __repr__(self) -> str:
        return f"Connection(uri={self.display_uri!r}, db_name={self.db_name!r})"

    def _connect(self) -> Any:
        from pymilvus import MilvusClient

        if is_local_file_uri(self.uri):
            # Milvus Lite: pymilvus starts the embedded engine for this file.
            return MilvusClient(self.uri)
        kwargs = dict(self._kwargs)
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
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
        try:
            raw = self.call("get_server_version", self._client.get_server_version)
        except MilvusUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - Lite servers do not implement GetVersion
            if "unimplemented" in str(exc).lower() or "UNIMPLEMENTED" in repr(exc):
                return LITE_CAPABILITIES
            raise
        version = _parse_version(str(raw))
        if version is None:
            logger.warning("could not parse Milvus version %r; assuming a current server", raw)
            return server_capabilities((2, 6, 0))
        if version < MIN_SERVER_VERSION:
            raise ConfigError(
                f"Milvus at {self.display_uri} is version {'.'.join(map(str, version))}; milvus-m3 needs "
                f">= 2.4 (sparse vectors and hybrid search). Upgrade the server (docker/docker-compose.yml pins one)."
            )
        return server_capabilities(version)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` with retries on transient failures; other errors pass through unchanged."""
        policy = self.retry
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_transient(exc):
                    raise
                elapsed = time.monotonic() - start
                if attempt >= policy.attempts or elapsed >= policy.total_seconds:
                    raise MilvusUnavailableError(
                        f"Milvus at {self.display_uri} did not answer '{what}' after {attempt} tries in "
                        f"{elapsed:.1f} s ({type(exc).__name__}: {_short(exc)}). Check that the server is "
                        "running and reachable (docker compose -f docker/docker-compose.yml ps), the URI and "
                        "port, and the credentials; or raise RetryPolicy.total_seconds."
                    ) from exc
                wait = min(policy.delay(attempt), max(0.0, policy.total_seconds - elapsed))
                logger.warning(
                    "Milvus %s: transient failure on %s (try %d/%d), retrying in %.2f s: %s",
                    self.display_uri, what, attempt, policy.attempts, wait, _short(exc),
                )
                time.sleep(wait)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is not an error
                logger.debug("close failed", exc_info=True)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
