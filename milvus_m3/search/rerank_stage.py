"""The second stage of a search: a cross-encoder re-orders the first stage's candidates.

The first stage (any mode, filters, group-by, tenants: whatever ``HybridSearcher`` runs) is asked for
``rerank_depth`` hits from the top (offset 0); the reranker scores each (query, hit text) pair; the
hits are sorted by that score (ties by id, ``fusion.id_order``) and ``offset`` / ``limit`` page over
the re-ordered list (``depth`` hits long: a page reaching past it is short or empty). Each returned ``Hit`` has ``score`` = ``rerank_score`` = the reranker's score and
``first_stage_score`` = the score the first stage gave it. Nothing here knows how the first stage was
computed.

Imports neither pymilvus nor torch: the reranker is any ``types.Reranker``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .._checks import check_int
from ..collection.schema import TEXT_FIELD
from ..errors import ConfigError, SearchError
from ..fusion import id_order
from ..types import Hit, Reranker
from .options import DEFAULT_RERANK_DEPTH, MAX_TOPK, SearchOptions, check_queries

__all__ = [
    "DEFAULT_RERANK_DEPTH",
    "RerankStage",
    "check_rerank_depth",
    "check_reranker",
    "first_stage",
    "rerank_hits",
    "with_rerank_stage",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerankStage:
    """One call's second stage: the reranker and how many first-stage hits it re-orders."""

    reranker: Reranker
    depth: int = DEFAULT_RERANK_DEPTH


def check_reranker(reranker: object) -> Reranker | None:
    if reranker is None or isinstance(reranker, Reranker):
        return reranker
    raise ConfigError(
        f"reranker must be a CrossEncoderReranker (or any object with model_name and "
        f"score(query, texts)), got {type(reranker).__name__}"
    )


def check_rerank_depth(depth: object, *, limit: int = 1, cap: int = MAX_TOPK) -> int:
    """``depth`` as an int in [limit, cap] (or 0: no rerank stage), or a ConfigError naming the fix.

    The reranked list holds ``depth`` hits: a page with ``offset + limit`` past it is short (or
    empty), as a page past the end of any result list; a ``limit`` above it could never be filled."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigError(f"rerank_depth must be an int >= 0 (0: no rerank stage), got {depth!r}")
    if depth == 0:
        return 0
    if depth < limit:
        raise ConfigError(
            f"rerank_depth {depth} is smaller than limit {limit}: the reranker would order fewer hits than "
            f"one page holds; raise rerank_depth to >= {limit} (it is how many first-stage hits are reranked)"
        )
    if depth > cap:
        raise ConfigError(f"rerank_depth {depth} is above Milvus's per-request cap {cap}")
    return depth


def first_stage(
    options: SearchOptions,
    reranker: Reranker | None,
    depth: int | None,
    *,
    default_reranker: Reranker | None,
    default_depth: int,
) -> tuple[SearchOptions, RerankStage | None]:
    """The options the first stage runs with, and this call's stage (None: no rerank stage).

    With a stage the first stage fetches ``depth`` hits from the top (offset 0) and always reads the
    text field (the reranker scores it)."""
    chosen = default_reranker if reranker is None else check_reranker(reranker)
    if chosen is None:
        if depth not in (None, 0):
            raise ConfigError(
                f"rerank_depth={depth} without a reranker; pass reranker=CrossEncoderReranker(...) "
                "(to the call or to HybridSearcher)"
            )
        return options, None
    depth = default_depth if depth is None else depth
    check_int("offset", options.offset, 0)
    depth = check_rerank_depth(depth, limit=check_int("limit", options.limit, 1))
    if depth == 0:
        return options, None
    fields = options.output_fields
    if fields is not None and not isinstance(fields, str) and TEXT_FIELD not in fields:
        fields = (*fields, TEXT_FIELD)
    first = dataclasses.replace(options, offset=0, limit=depth, output_fields=fields)
    return first, RerankStage(reranker=chosen, depth=depth)


def rerank_hits(
    queries: Sequence[str], results: Sequence[Sequence[Hit]], reranker: Reranker, *, offset: int, limit: int
) -> list[list[Hit]]:
    """Each query's hits re-ordered by ``reranker`` and paged; see the module."""
    if len(queries) != len(results):
        raise SearchError(f"{len(results)} result lists for {len(queries)} queries")
    out: list[list[Hit]] = []
    for query, hits in zip(queries, results, strict=True):
        if not hits:
            out.append([])
            continue
        texts = []
        for hit in hits:
            if hit.text is None:
                raise SearchError(
                    f"hit {hit.id!r} came back without its text; the rerank stage scores the text field, "
                    "so keep 'text' in output_fields"
                )
            texts.append(hit.text)
        scores = reranker.score(query, texts)
        if len(scores) != len(hits):
            raise SearchError(
                f"the reranker gave {len(scores)} scores for {len(hits)} texts; it must give one each"
            )
        scored = [
            dataclasses.replace(hit, score=float(s), rerank_score=float(s), first_stage_score=hit.score)
            for hit, s in zip(hits, scores, strict=True)
        ]
        scored.sort(key=lambda h: (-h.score, id_order(h.id)))
        out.append(scored[offset : offset + limit])
    return out


def with_rerank_stage(
    search: Callable[[Sequence[str], SearchOptions], list[list[Hit]]],
    queries: Sequence[str],
    options: SearchOptions,
    reranker: Reranker | None,
    depth: int | None,
    default_reranker: Reranker | None,
    default_depth: int,
) -> list[list[Hit]]:
    """``search(queries, options)`` (the first stage) followed by this call's rerank stage, if any."""
    first, stage = first_stage(
        options, reranker, depth, default_reranker=default_reranker, default_depth=default_depth
    )
    results = search(queries, first)
    if stage is None:
        return results
    return rerank_hits(
        check_queries(queries), results, stage.reranker, offset=options.offset, limit=options.limit
    )
