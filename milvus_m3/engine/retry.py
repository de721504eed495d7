"""Retries: which failures are transient or refused credentials, the backoff loop, and secret scrubbing.

Private to ``connection.py``, which runs every client call through ``call_with_retry``. What pymilvus
3.0.2 raises when the server is away is written down (and measured) in ``connection.py``'s docstring.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .._checks import short
from ..errors import ConfigError, MilvusM3Error, MilvusUnavailableError

__all__ = [
    "BIG_REQUEST",
    "MIN_CALL_TIMEOUT",
    "RequestSize",
    "RetryPolicy",
    "Secrets",
    "acall_with_retry",
    "call_with_retry",
    "chain",
    "code_name",
    "detach_cycles",
    "disk_full_cause",
    "disk_full_error",
    "is_auth_failure",
    "is_deadline",
    "is_disk_full",
    "is_transient",
]

logger = logging.getLogger("milvus_m3.connection")  # the retry log keeps the name users filter on

T = TypeVar("T")

MIN_CALL_TIMEOUT = 1.0
"""The shortest per-call deadline handed to pymilvus, even when the retry budget is nearly spent."""

BIG_REQUEST = 100
"""Queries or rows above which a request that outlasts its deadline is not sent again: the same work
under the same deadline would most likely time out again (and load the server twice)."""

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

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_MARKERS = ("no space left on device", "enospc", "disk quota exceeded", "edquot")

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


@dataclass(frozen=True)
class RequestSize:
    """How much one request carries, for the messages: ``RequestSize(10000, "queries")``."""

    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count} {self.unit}"

    @property
    def big(self) -> bool:
        return self.count > BIG_REQUEST


# ------------------------------------------------------------------------- classification


def code_name(exc: BaseException) -> str:
    """The gRPC status name of a grpc.RpcError ("UNAVAILABLE"), or of a MilvusException built from one."""
    code = getattr(exc, "code", None)
    try:
        value = code() if callable(code) else code
    except Exception:
        return ""
    name = getattr(value, "name", None)
    return str(name) if name else ""


def chain(exc: BaseException, depth: int = 4) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (pymilvus wraps gRPC errors in MilvusException)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and depth > 0 and id(cur) not in seen:
        yield cur
        seen.add(id(cur))
        cur = cur.__cause__
        depth -= 1


_MAX_CHAIN = 64
"""Links of a cause chain kept at most (a deeper one is cut there: no real chain is that deep)."""


def detach_cycles(exc: BaseException) -> BaseException:
    """Cut every ``__cause__`` / ``__context__`` link of ``exc``'s chain that leads back into itself.

    pymilvus's decorators ``raise e from e`` (and a gRPC error's context may point back at the
    MilvusException raised from it), so a plain ``while exc: exc = exc.__cause__`` never ends. Only the
    links that close a loop are set to None: every exception, its type, message, code and traceback stay,
    and so does every link that leads somewhere new. Returns ``exc``.
    """
    path: list[BaseException] = []  # the links being followed (a link back into them closes a loop)
    done: set[int] = set()  # ids of exceptions whose whole chain is already free of loops

    def visit(e: BaseException, depth: int) -> None:
        path.append(e)
        for attr in ("__cause__", "__context__"):
            nxt = getattr(e, attr)
            if nxt is None or id(nxt) in done:
                continue
            if any(nxt is p for p in path) or depth >= _MAX_CHAIN:
                setattr(e, attr, None)
            else:
                visit(nxt, depth + 1)
        path.pop()
        done.add(id(e))

    visit(exc, 0)
    return exc


def _says_auth(e: BaseException) -> bool:
    if code_name(e) in _AUTH_CODES or getattr(e, "compatible_code", None) == _PERMISSION_DENIED:
        return True
    details = getattr(e, "details", None)
    text = str(e).lower()
    if callable(details):
        with suppress(Exception):  # a broken error object tells nothing more
            text += " " + str(details()).lower()
    return any(marker in text for marker in _AUTH_MARKERS)


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server refused the credentials (or the user lacks a privilege).

    A refused Connect reaches us as ``MilvusException("Fail connecting ...")`` raised from a
    ``grpc.RpcError`` UNAUTHENTICATED, so the cause chain is read too.
    """
    if isinstance(exc, MilvusM3Error):
        return False
    return any(_says_auth(e) for e in chain(exc))


def disk_full_cause(exc: BaseException) -> BaseException | None:
    """The exception of ``exc``'s chain that says the disk is full (an OSError ENOSPC or EDQUOT, or an
    engine message "No space left on device"), or None: no retry can cure it, only freeing space."""
    if isinstance(exc, MilvusM3Error):
        return None
    for e in chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return e
        if any(marker in str(e).lower() for marker in _DISK_FULL_MARKERS):
            return e
    return None


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or a cause says the disk is full (``disk_full_cause``)."""
    return disk_full_cause(exc) is not None


def disk_full_error(where: str, what: str, detail: str) -> MilvusM3Error:
    """The one message for a full disk: what failed, where, that it was not retried, and the fix."""
    return MilvusM3Error(
        f"Milvus at {where}: '{what}' failed because the disk is full (ENOSPC: {detail}); it was not "
        "retried. Free space on the disk that holds the data (a Milvus Lite file's folder, or the "
        "server's volumes), or give a Lite file on another disk, then run it again."
    )


def is_deadline(exc: BaseException) -> bool:
    """True when ``exc`` or a cause is a call that outlasted its deadline (gRPC DEADLINE_EXCEEDED)."""
    return any(
        code_name(e) == "DEADLINE_EXCEEDED" or "deadline exceeded" in str(e).lower() for e in chain(exc)
    )


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry may cure: the server is down, restarting or overloaded."""
    if isinstance(exc, MilvusM3Error) or is_auth_failure(exc) or is_disk_full(exc):
        return False
    if getattr(exc, "is_input_error", False) is True:
        return False
    if getattr(exc, "retriable", False) is True or isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for e in chain(exc):
        if code_name(e) in _TRANSIENT_CODES or getattr(e, "compatible_code", None) in _TRANSIENT_COMPAT_CODES:
            return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


# ------------------------------------------------------------------------- secrets


class Secrets:
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

    def text(self, exc: BaseException) -> str:
        """``exc``'s message on one line, cut short, with every secret replaced by ***."""
        return self.scrub(short(exc, 300, squash=True))

    def leaks(self, exc: BaseException) -> bool:
        """Whether ``exc`` or its causes show a secret in their str, repr or args."""
        return any(self.leak_in(f"{e!s} {e!r} {e.args!r}") for e in chain(exc))

    def raise_from(self, err: MilvusM3Error, exc: BaseException) -> NoReturn:
        """Raise ``err`` from ``exc``, or from nothing when ``exc`` (or its causes) would show a secret."""
        if self.leaks(exc):
            raise err from None
        raise err from exc


# ------------------------------------------------------------------------- the loop


@dataclass(frozen=True, kw_only=True)
class _Call:
    """One call's context, for the messages: what it does, where, and the secrets to keep out."""

    what: str
    where: str
    secrets: Secrets
    request: RequestSize | None = None

    def carried(self) -> str:
        return "" if self.request is None else f" The request carried {self.request}."


def call_with_retry(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    what: str,
    where: str,
    policy: RetryPolicy,
    timeout: float | None,
    secrets: Secrets,
    request: RequestSize | None = None,
) -> T:
    """Run ``fn`` with retries on transient failures under ``policy``.

    timeout: when not None, handed to ``fn`` as ``timeout=``, cut to what is left of the policy's
    total (never below ``MIN_CALL_TIMEOUT``). Transient failures that outlast the policy become one
    MilvusUnavailableError; refused credentials a ConfigError; other errors pass through unchanged
    unless their text holds a secret, in which case a scrubbed MilvusM3Error replaces them.
    """
    ctx = _Call(what=what, where=where, secrets=secrets, request=request)
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        if timeout is not None:
            left = policy.total_seconds - (time.monotonic() - start)
            kwargs["timeout"] = max(MIN_CALL_TIMEOUT, min(timeout, left))
        try:
            return fn(*args, **kwargs)
        except MilvusM3Error:
            raise
        except Exception as exc:
            detach_cycles(exc)
            if not (is_auth_failure(exc) or is_disk_full(exc) or is_transient(exc) or secrets.leaks(exc)):
                raise  # not ours to handle: passes through unchanged
            _raise_unless_transient(ctx, exc)
            _raise_on_a_big_deadline(ctx, exc, kwargs.get("timeout"))
            _give_up_or_wait(ctx, exc, policy, attempt, time.monotonic() - start)


def _raise_unless_transient(ctx: _Call, exc: Exception) -> None:
    """Refused credentials become a ConfigError, a full disk one clear error; another final error that
    shows a secret a scrubbed one."""
    if is_auth_failure(exc):
        ctx.secrets.raise_from(
            ConfigError(
                f"Milvus at {ctx.where} refused the credentials for '{ctx.what}' "
                f"({type(exc).__name__}: {ctx.secrets.text(exc)}). Check the token or user/password (the "
                "server runs with common.security.authorizationEnabled) and the user's privileges."
            ),
            exc,
        )
    full = disk_full_cause(exc)
    if full is not None:
        ctx.secrets.raise_from(disk_full_error(ctx.where, ctx.what, ctx.secrets.text(full)), exc)
    if not is_transient(exc):
        ctx.secrets.raise_from(
            MilvusM3Error(
                f"Milvus at {ctx.where}: '{ctx.what}' failed ({type(exc).__name__}: {ctx.secrets.text(exc)})"
            ),
            exc,
        )


def _raise_on_a_big_deadline(ctx: _Call, exc: Exception, deadline: Any) -> None:
    """A big request that outlasted its deadline: one MilvusUnavailableError naming its size and the
    timeout, and no retry (the same work would meet the same deadline)."""
    if ctx.request is None or not ctx.request.big or not is_deadline(exc):
        return
    took = f"within its {deadline:g} s deadline" if isinstance(deadline, (int, float)) else "in time"
    ctx.secrets.raise_from(
        MilvusUnavailableError(
            f"Milvus at {ctx.where} did not answer '{ctx.what}' {took} ({type(exc).__name__}: "
            f"{ctx.secrets.text(exc)}); the request carried {ctx.request}, so it was not retried. A "
            "request that big may need longer: raise the timeout (--timeout, ConnectionOptions.timeout; "
            "RetryPolicy.total_seconds bounds it too) or send fewer per call (a smaller batch). If small "
            "requests time out as well, the server is stuck: check it."
        ),
        exc,
    )


def _give_up_or_wait(ctx: _Call, exc: Exception, policy: RetryPolicy, attempt: int, elapsed: float) -> None:
    """After transient failure number ``attempt``: one MilvusUnavailableError when the policy is spent, else a backoff."""
    time.sleep(_backoff(ctx, exc, policy, attempt, elapsed))


def _backoff(ctx: _Call, exc: Exception, policy: RetryPolicy, attempt: int, elapsed: float) -> float:
    """The wait before the next try (logged), or one MilvusUnavailableError when the policy is spent."""
    if attempt >= policy.attempts or elapsed >= policy.total_seconds:
        ctx.secrets.raise_from(
            MilvusUnavailableError(
                f"Milvus at {ctx.where} did not answer '{ctx.what}' after {attempt} tries in "
                f"{elapsed:.1f} s ({type(exc).__name__}: {ctx.secrets.text(exc)}). Check that the server is "
                "running and reachable (docker compose -f docker/docker-compose.yml ps; curl "
                "http://HOST:9091/healthz), the URI and port, TLS settings and credentials; or "
                f"raise RetryPolicy.total_seconds (and --timeout, ConnectionOptions.timeout).{ctx.carried()}"
            ),
            exc,
        )
    wait = min(policy.delay(attempt), max(0.0, policy.total_seconds - elapsed))
    logger.warning(
        "Milvus %s: transient failure on %s (try %d/%d), retrying in %.2f s: %s",
        ctx.where,
        ctx.what,
        attempt,
        policy.attempts,
        wait,
        ctx.secrets.text(exc),
    )
    return wait


async def acall_with_retry(
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    what: str,
    where: str,
    policy: RetryPolicy,
    timeout: float | None,
    secrets: Secrets,
    request: RequestSize | None = None,
) -> T:
    """``call_with_retry`` for a coroutine function (pymilvus's ``AsyncMilvusClient``): the same
    classification, deadlines and messages; the backoff is ``asyncio.sleep``, so the loop runs on."""
    ctx = _Call(what=what, where=where, secrets=secrets, request=request)
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        if timeout is not None:
            left = policy.total_seconds - (time.monotonic() - start)
            kwargs["timeout"] = max(MIN_CALL_TIMEOUT, min(timeout, left))
        try:
            return await fn(*args, **kwargs)
        except MilvusM3Error:
            raise
        except Exception as exc:
            detach_cycles(exc)
            if not (is_auth_failure(exc) or is_disk_full(exc) or is_transient(exc) or secrets.leaks(exc)):
                raise
            _raise_unless_transient(ctx, exc)
            _raise_on_a_big_deadline(ctx, exc, kwargs.get("timeout"))
            await asyncio.sleep(_backoff(ctx, exc, policy, attempt, time.monotonic() - start))
