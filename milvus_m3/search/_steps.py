"""The I/O seam of ``execute.PlanRunner``: a plan runs as a generator of Milvus calls (sans I/O).

``PlanRunner``'s strategies are generators: each ``yield`` hands the driver a list of ``Call``s to send
(concurrently when there are several) and receives their results in the same order, or has the call's
exception thrown back in at that point. ``drive`` sends them with the sync client (``PlanRunner.run``),
``adrive`` awaits them on ``AsyncMilvusClient`` (``AsyncPlanRunner.arun``): one orchestration, one
set of requests, the same fusion and result mapping, two transports.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal, TypeVar

from .._checks import short
from ..errors import FilterError, MilvusM3Error, SearchError
from .options import SearchPlan

__all__ = ["Call", "Steps", "adrive", "drive", "engine_error", "missing_results", "sent", "spread"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Call:
    """One Milvus client call: ``client.<method>(**kwargs)``, described as ``what`` in errors."""

    what: str = ""
    method: Literal["search", "hybrid_search", "query"] = "search"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


Steps = Generator[list[Call], list[Any], T]
"""A plan being run: yields the calls to send, is sent their results, returns the plan's answer."""


def drive(steps: Steps[T], send: Callable[[list[Call]], list[Any]]) -> T:
    """Run ``steps`` to its answer, sending each batch of calls with ``send``."""
    try:
        calls = next(steps)
        while True:
            try:
                got = send(calls)
            except Exception as exc:  # the generator decides what the engine's error means
                calls = steps.throw(exc)
            else:
                calls = steps.send(got)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _resume(steps: Steps[T], how: str, value: Any) -> tuple[bool, Any]:
    """One step of ``steps`` (``next`` / ``send`` / ``throw``) as (done, calls or answer): a
    StopIteration cannot cross a thread's future, so it comes back as a value."""
    try:
        if how == "next":
            return False, next(steps)
        if how == "send":
            return False, steps.send(value)
        return False, steps.throw(value)
    except StopIteration as stop:
        return True, stop.value


async def adrive(steps: Steps[T], send: Callable[[list[Call]], Awaitable[list[Any]]]) -> T:
    """``drive`` with an awaited ``send``. The plan's own work between calls (building requests,
    fusing, building hits: 0.6 s for a 16,384-hit page) runs in a worker thread, so the event loop only
    ever waits on Milvus, never on the plan."""
    done, out = await asyncio.to_thread(_resume, steps, "next", None)
    while not done:
        try:
            got = await send(out)
        except Exception as exc:  # the generator decides what the engine's error means
            done, out = await asyncio.to_thread(_resume, steps, "throw", exc)
        else:
            done, out = await asyncio.to_thread(_resume, steps, "send", got)
    result: T = out
    return result


def sent(calls: list[Call], plan: SearchPlan, collection: str) -> Steps[list[Any]]:
    """Yield ``calls``; an engine error comes back as ours (FilterError / SearchError)."""
    try:
        return (yield calls)
    except MilvusM3Error:
        raise
    except Exception as exc:  # pymilvus raises MilvusException, ParamError, grpc errors
        raise engine_error(exc, plan, collection) from exc


def missing_results(what: str, got: int, n: int, plan: SearchPlan, collection: str) -> SearchError:
    """A result list missing for a query is an error, never 'no hits'."""
    if plan.expr:
        return FilterError(
            f"the engine rejected the filter {short(plan.expr)!r} on collection {collection!r}: "
            f"the {what} returned {got} result lists for {n} queries (Milvus Lite answers a "
            "bad filter in a hybrid search this way); check field names, value types and syntax"
        )
    return SearchError(
        f"the {what} on {collection!r} returned {got} result lists for {n} queries; "
        "the engine failed without saying why (see the Milvus log)"
    )


def engine_error(exc: Exception, plan: SearchPlan, collection: str) -> MilvusM3Error:
    msg = " ".join(str(getattr(exc, "message", "") or exc).split())
    lowered = msg.lower()
    if plan.expr and any(s in lowered for s in ("expr", "filter", "phyfilterbitsnode", "parse")):
        return FilterError(
            f"the engine rejected the filter {short(plan.expr)!r} on collection {collection!r}: "
            f"{short(msg, 300)}. Check field names, value types and syntax, or build the filter with "
            "milvus_m3.filters.F"
        )
    what = "+".join(plan.legs)
    return SearchError(f"{what} search on collection {collection!r} failed: {short(msg, 300)}")


def spread(res: Any, rows: list[int], n: int) -> list[Any]:
    """Result lists for ``n`` queries from ``res``, the answer for the queries ``rows`` (empty lists for
    the others); a short answer as it came (the caller raises with the reason)."""
    if not rows:
        return [[] for _ in range(n)]
    if len(res) != len(rows):
        return list(res)
    full: list[Any] = [[] for _ in range(n)]
    for i, hits in zip(rows, res, strict=True):
        full[i] = hits
    return full
