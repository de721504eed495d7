"""What both framework adapters share: the searcher they wrap, the per-call options, running a search.

Private; imports no framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ..filters import FilterLike
from ..search.async_searcher import AsyncHybridSearcher
from ..search.searcher import HybridSearcher
from ..types import Hit

__all__ = ["RESERVED_OPTIONS", "asearch", "hit_metadata", "missing_framework", "search"]

RESERVED_OPTIONS = frozenset({"limit", "mode", "filter", "tenant"})
"""Options the retrievers take as their own fields (``search_kwargs`` may not repeat them)."""


def missing_framework(package: str, extra: str, exc: ImportError) -> MissingDependencyError:
    return MissingDependencyError(
        f"this adapter needs {package}, which is not installed ({exc}); pip install 'milvus-m3[{extra}]'"
    )


def _options(
    limit: int, mode: Any, filter: FilterLike, tenant: Any, extra: Mapping[str, Any]
) -> dict[str, Any]:
    clash = sorted(RESERVED_OPTIONS & set(extra))
    if clash:
        raise ConfigError(f"search_kwargs repeats {clash}: give them as the retriever's own fields")
    options: dict[str, Any] = {"limit": limit, "filter": filter, **extra}
    if mode is not None:
        options["mode"] = mode
    if tenant is not None:
        options["tenant"] = tenant
    return options


def _check(searcher: Any) -> None:
    if not isinstance(searcher, (HybridSearcher, AsyncHybridSearcher)):
        raise ConfigError(
            f"searcher must be a HybridSearcher or an AsyncHybridSearcher, got {type(searcher).__name__}"
        )


def search(
    searcher: Any,
    query: str,
    *,
    limit: int,
    mode: Any,
    filter: FilterLike,
    tenant: Any,
    extra: Mapping[str, Any],
) -> list[Hit]:
    """``searcher.search`` (an AsyncHybridSearcher's sync twin when given one)."""
    _check(searcher)
    sync = searcher.sync if isinstance(searcher, AsyncHybridSearcher) else searcher
    hits: list[Hit] = sync.search(query, **_options(limit, mode, filter, tenant, extra))
    return hits


async def asearch(
    searcher: Any,
    query: str,
    *,
    limit: int,
    mode: Any,
    filter: FilterLike,
    tenant: Any,
    extra: Mapping[str, Any],
) -> list[Hit]:
    """``await searcher.search`` for an AsyncHybridSearcher; a HybridSearcher's in a worker thread."""
    _check(searcher)
    options = _options(limit, mode, filter, tenant, extra)
    if isinstance(searcher, AsyncHybridSearcher):
        return await searcher.search(query, **options)
    hits: list[Hit] = await asyncio.to_thread(lambda: searcher.search(query, **options))
    return hits


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """The id, the fused score, the stored metadata and the declared fields of a hit, each under its own key."""
    return {"id": hit.id, "score": hit.score, "metadata": dict(hit.metadata), "fields": dict(hit.fields)}
