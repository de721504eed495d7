"""How a ``SearchPlan`` is run against Milvus: the strategy per plan, chosen from the engine's flags.

Strategies (nothing here asks which engine; ``PlanRunner.__init__`` reads ``Capabilities``):

* one leg (``dense``, ``sparse`` or ``bm25``): one plain ``search`` on that field for the whole batch;
  the scores are the field's raw scores (inner product, or BM25).
* several legs, fused by the engine: one ``hybrid_search`` with one ``AnnSearchRequest`` per leg, when
  the plan's ranker has a Milvus ranker (``rankers.REGISTRY``) whose numbers on this engine are ours
  (``MilvusRanker.fits``) and the page lies inside the first candidate tier: RRF with equal weights
  where ``hybrid_search`` is not slow (``caps.slow_hybrid_search``; or ``fusion="server"``), one
  request per query where the engine numbers RRF ranks across a batch (``caps.rrf_ranks_across_batch``);
  the weighted ranker with ``norm_score=True``, or with ``norm_score=False`` where the engine honours
  it (not ``caps.ignores_norm_score``), and with a bm25 leg only where the engine maps BM25 scores the
  right way round (not ``caps.weighted_inverts_bm25``).
* several legs, fused here (everything else: weighted RRF, raw weighted sums on Milvus Lite, client
  RRF, DBSF and any ranker Milvus lacks, pages past the first tier, ``group_by``): one plain search per
  leg, sent concurrently, fused by the ranker's ``RankerSpec.fuse`` (``fusion.rrf`` / ``weighted`` /
  ``dbsf``: the same numbers as Milvus's rankers where it has them; tests pin it) over
  ``fusion.tiered`` candidate tiers (tier j: each leg's top ``candidates * 2**j``, searched with
  exactly that limit), so every page is a slice of one ranking. ``group_by`` keeps the first hit of
  each group in that ranking (one hit per group, in fused order), reading deeper tiers until the page
  is full. A tier is read only as deep as a page needs, from the same searches every page sends.

A query whose sparse vector is empty gets an empty sparse list (it matches nothing there); its other
legs still count. Where hybrid output fields come back wrong for ids holding ``'``
(``caps.hybrid_output_by_quoted_id``) and ids are varchar, the fields of such a result list are read
again with a correctly escaped query. Hits are built as new ``Hit`` objects; the pymilvus results are
only read, never changed.

The strategies are written once, as generators of Milvus calls (``_steps.py``): ``run`` sends those
calls with the sync client (several at once from a small thread pool), ``AsyncPlanRunner.arun`` awaits
the same calls on ``AsyncMilvusClient``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from ..collection.legs import LEG_TABLE, query_data, searchable_rows
from ..collection.manager import CollectionManager
from ..collection.schema import ID_FIELD, CollectionSpec
from ..engine.capabilities import Capabilities
from ..errors import ConfigError, MilvusM3Error, SearchError
from ..filters import F, render
from ..fusion import tiered
from ..types import Encoder, Hit, M3Embeddings
from ._hits import (
    Ranked,
    dense_index_kind,
    first_per_group,
    grouped_hits,
    hit,
    page,
    tie_runs_past,
    ties_by_id,
)
from ._steps import Call, Steps, drive, engine_error, missing_results, sent, spread
from .options import CANDIDATE_FACTOR, MAX_TOPK, Fusion, Leg, SearchPlan
from .rankers import ranker_spec
from .requests import (
    FieldRequest,
    LegRequestContext,
    dense_search_params,
    leg_request,
)
from .rerank import M3Reranker

__all__ = ["PlanRunner"]


_EMPTY_BM25_ERROR = "Invalid sparse row: NaN or Inf value"
"""What Milvus (Lite 2.5.1 and servers) answers a BM25 search on a collection with no rows yet."""


class PlanRunner:
    """Runs search plans on one collection (see the module docstring for the strategies)."""

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        spec: CollectionSpec,
        caps: Capabilities,
        *,
        fusion: Fusion = "auto",
        dense_params: Mapping[str, Any] | None = None,
        sparse_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.manager = manager
        self.collection = collection
        self.spec = spec
        self._dense_params = dict(dense_params or {})
        self._sparse_params = dict(sparse_params or {})
        self._dense_index = dense_index_kind(spec, caps.default_dense_index)
        self._dialect = caps.filter_dialect
        self._refetch_quoted_ids = caps.hybrid_output_by_quoted_id and spec.id_type == "varchar"
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._m3: M3Reranker | None = None
        self._what_hybrid = f"hybrid search on {collection!r}"
        self._what_search = f"search on {collection!r}"

        self.client_rrf = fusion == "client" or (fusion == "auto" and caps.slow_hybrid_search)
        """Rankers that follow ``fusion`` (RRF) are computed here from one plain search per leg."""
        self._caps = caps

    # ----------------------------------------------------------------- entry points

    def run(self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan) -> list[list[Hit]]:
        """Hits per query of ``emb`` (``texts``: the query texts, which the bm25 leg needs)."""
        return drive(self.steps(emb, texts, plan), self._send)

    def steps(
        self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan
    ) -> Steps[list[list[Hit]]]:
        """``run`` as a generator of the Milvus calls it makes (``_steps.py``; the async runner's seam).
        Sparse query weights are pruned as the collection's rows were (``CollectionSpec.prune_sparse``)."""
        if self.spec.sparse_top_k is not None or self.spec.sparse_mass is not None:
            emb = dataclasses.replace(emb, sparse=self.spec.prune_sparse(emb.sparse))
        text_legs = [leg for leg in plan.legs if LEG_TABLE[leg].query_input == "text"]
        if text_legs and texts is None:
            raise ConfigError(
                f"the {text_legs[0]} leg analyses the query text, which search_embeddings does not have; use "
                f"search / search_batch, or legs without {text_legs[0]}"
            )
        try:
            if len(plan.legs) == 1:
                return (yield from self._plain(emb, texts, plan))
            if self._engine_fuses(emb, plan):
                return (yield from self._engine_fused(emb, texts, plan))
            return (yield from self._client_fused(emb, texts, plan))
        except SearchError as exc:
            if not (text_legs and _EMPTY_BM25_ERROR in str(exc)):
                raise
            # BM25 over an empty collection: Milvus divides by its average document length, 0, and
            # refuses its own NaN. No document, no hit (checked, so a real NaN is still an error).
            counted = yield [
                Call(
                    what=f"count {self.collection!r}",
                    method="query",
                    kwargs={"collection_name": self.collection, "filter": "", "output_fields": ["count(*)"]},
                )
            ]
            if int(counted[0][0]["count(*)"]) != 0:
                raise
            return [[] for _ in range(len(emb))]

    def run_m3(
        self, texts: list[str], plan: SearchPlan, encoder: Encoder | None, embeddings: M3Embeddings | None
    ) -> list[list[Hit]]:
        """Modes m3 / m3-all through rerank.M3Reranker (paper weights 1, 0.3, 1)."""
        if plan.group_by is not None:
            raise ConfigError(f"group_by is not available in mode {plan.mode!r}; use hybrid, dense or sparse")
        if plan.partition_names:
            raise ConfigError(
                f"partition_names are not available in mode {plan.mode!r}; use hybrid, dense or sparse"
            )
        if encoder is None:
            raise ConfigError(
                f"mode {plan.mode!r} needs an encoder; pass encoder= when creating the searcher"
            )
        reranker = self.m3_reranker(encoder)
        mode: Literal["m3", "m3-all"] = "m3" if plan.mode == "m3" else "m3-all"
        results = self._guarded(  # an engine error becomes ours, as in the other modes
            plan,
            lambda: reranker.search_many(
                texts,
                limit=plan.depth,
                mode=mode,
                filter=plan.expr or None,
                query_embeddings=embeddings,
                candidates=plan.candidates,
                dense_search_params=self.dense_search_params(plan.candidates)["params"],
            ),
        )
        return [hits[plan.offset :] for hits in results]

    def m3_reranker(self, encoder: Encoder) -> M3Reranker:
        """The ``M3Reranker`` modes m3 / m3-all run through: built on first use, then reused (each call
        gives it its candidate depth and search parameters)."""
        if self._m3 is None or self._m3.encoder is not encoder:
            self._m3 = M3Reranker(self.manager, self.collection, encoder, check=False)
        return self._m3

    def close(self) -> None:
        """Shut the thread pool the legs of a search are sent from (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def dense_search_params(self, depth: int) -> dict[str, Any]:
        """Dense search parameters for a search ``depth`` deep on this collection's index."""
        return dense_search_params(
            self._dense_index, depth, ivf_nlist=self.spec.ivf_nlist, overrides=self._dense_params
        )

    def _send(self, calls: list[Call]) -> list[Any]:
        """The sync transport: each call through ``Connection.call``; several at once in a thread pool."""
        conn = self.manager.connection

        def one(c: Call) -> Any:
            return conn.call(c.what, getattr(conn.client, c.method), **c.kwargs)

        if len(calls) == 1:
            return [one(calls[0])]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=3, thread_name_prefix="milvus-m3-search"
            )
        futures = [self._pool.submit(one, c) for c in calls]
        return [f.result() for f in futures]

    # ----------------------------------------------------------------- strategies

    def _engine_fuses(self, emb: M3Embeddings, plan: SearchPlan) -> bool:
        if plan.group_by is not None or plan.depth > plan.candidates:
            return False
        if any(searchable_rows(leg, emb) != list(range(len(emb))) for leg in plan.legs):
            return False  # an empty sparse query: Milvus refuses it; fused here with an empty list
        engine = ranker_spec(plan.ranker).milvus
        if engine is None or (engine.follows_fusion and self.client_rrf):
            return False  # Milvus has no such ranker, or the fusion option puts it here
        return engine.fits(plan, self._caps)

    def _plain(
        self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan
    ) -> Steps[list[list[Hit]]]:
        leg = plan.legs[0]
        rows = searchable_rows(leg, emb)
        n = len(emb)
        if plan.group_by is not None:
            call = self._guarded(
                plan, lambda: self._leg_call(leg, emb, texts, rows, plan.depth, plan, paged=True)
            )
            res = [] if call is None else (yield from sent([call], plan, self.collection))[0]
            return (yield from self._mapped(spread(res, rows, n), n, plan, f"{leg} search"))
        # A page is a slice of one ranking: the top offset+limit+1 with the whole tie at the page's end
        # (read deeper while it runs past what was read), ordered by (score, id), sliced here. Milvus's
        # own offset breaks ties anew on every call, so pages of tied hits would repeat each other.
        results: list[Any] = [[] for _ in range(n)]
        todo, k = rows, min(MAX_TOPK, plan.depth + 1)
        while todo:
            ask, limit = todo, k
            build = functools.partial(self._leg_call, leg, emb, texts, ask, limit, plan, paged=False)
            call = self._guarded(plan, build)
            got = spread([] if call is None else (yield from sent([call], plan, self.collection))[0], ask, n)
            if len(got) != n:
                raise missing_results(f"{leg} search", len(got), n, plan, self.collection)
            for i in ask:
                results[i] = got[i]
            todo = [i for i in ask if limit < MAX_TOPK and tie_runs_past(got[i], plan.depth, limit)]
            k = min(MAX_TOPK, k * CANDIDATE_FACTOR)
        return page((yield from self._mapped(results, n, plan, f"{leg} search")), plan)

    def _engine_fused(
        self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan
    ) -> Steps[list[list[Hit]]]:
        """The engine's ranker over the top offset+limit+1, the whole tie at the page's end read (as in
        ``_plain``), paged here."""
        n = len(emb)
        engine = ranker_spec(plan.ranker).milvus
        one_by_one = engine is not None and engine.by_rank and self._caps.rrf_ranks_across_batch
        results: list[Any] = [[] for _ in range(n)]
        todo, k = list(range(n)), min(MAX_TOPK, plan.depth + 1)
        while todo:
            limit = k
            # the engine numbers RRF ranks across a batch there: only a one-query request is fused right
            groups = [[i] for i in todo] if one_by_one else [todo]
            for group in groups:
                build = functools.partial(self._hybrid_call, emb, texts, group, plan, limit)
                got = (yield from sent([self._guarded(plan, build)], plan, self.collection))[0]
                if len(got) != len(group):
                    raise missing_results("hybrid search", len(got), n, plan, self.collection)
                for i, hits in zip(group, got, strict=True):
                    results[i] = hits
            todo = [i for i in todo if limit < MAX_TOPK and tie_runs_past(results[i], plan.depth, limit)]
            k = min(MAX_TOPK, k * CANDIDATE_FACTOR)
        return page((yield from self._mapped(results, n, plan, "hybrid search")), plan)

    def _client_fused(
        self, emb: M3Embeddings, texts: Sequence[str] | None, plan: SearchPlan
    ) -> Steps[list[list[Hit]]]:
        """One plain search per leg and tier, fused here (see the module docstring).

        Tier j is each leg's top ``candidates * CANDIDATE_FACTOR**j`` from a search with exactly that
        limit, so a page computes the same tiers as every other page (Milvus breaks ties the same way
        for the same query and limit, not across limits)."""
        n = len(emb)
        fuse = self._fuser(plan)
        tiers: list[list[list[Ranked]]] = [[] for _ in range(n)]
        entities: dict[Any, Mapping[str, Any]] = {}
        out: list[list[Hit]] = [[] for _ in range(n)]
        pending = list(range(n))
        tier = plan.candidates
        while pending:
            lists, found = yield from self._leg_lists(emb, texts, pending, tier, plan)
            for doc, entity in found.items():
                entities.setdefault(doc, entity)
            deeper: list[int] = []
            for qi, per_leg in zip(pending, lists, strict=True):
                tiers[qi].append(per_leg)
                hits = [hit(doc, score, entities[doc]) for doc, score in tiered(tiers[qi], fuse)]
                if plan.group_by is not None:
                    hits = first_per_group(hits, plan.group_by, plan.depth)
                exhausted = tier >= MAX_TOPK or all(len(x) < tier for x in per_leg)
                if len(hits) < plan.depth and not exhausted:
                    deeper.append(qi)
                else:
                    out[qi] = hits[plan.offset : plan.depth]
            pending = deeper
            tier = min(MAX_TOPK, tier * CANDIDATE_FACTOR)
        return out

    def _fuser(self, plan: SearchPlan) -> Callable[[Sequence[Sequence[tuple[Any, float]]]], Ranked]:
        fuse = ranker_spec(plan.ranker).fuse
        return lambda lists: fuse(lists, plan)

    def _leg_lists(
        self, emb: M3Embeddings, texts: Sequence[str] | None, queries: list[int], limit: int, plan: SearchPlan
    ) -> Steps[tuple[list[list[Ranked]], dict[Any, Mapping[str, Any]]]]:
        """Per query of ``queries``, one (id, score) list per leg; and the entity of every id seen.
        The legs' searches are sent together."""
        sub = emb.select(queries)
        sub_texts = None if texts is None else [texts[i] for i in queries]
        rows = [searchable_rows(leg, sub) for leg in plan.legs]
        calls = self._guarded(
            plan,
            lambda: [
                self._leg_call(leg, sub, sub_texts, r, limit, plan, paged=False)
                for leg, r in zip(plan.legs, rows, strict=True)
            ],
        )
        to_send = [c for c in calls if c is not None]
        got = iter((yield from sent(to_send, plan, self.collection)) if to_send else [])
        entities: dict[Any, Mapping[str, Any]] = {}
        lists: list[list[Ranked]] = [[] for _ in queries]
        for leg, call, r in zip(plan.legs, calls, rows, strict=True):
            results = spread([] if call is None else next(got), r, len(sub))
            if len(results) != len(queries):
                raise missing_results(f"{leg} search", len(results), len(queries), plan, self.collection)
            for qi, hits in enumerate(results):
                ranked: Ranked = []
                for h in hits:
                    entities.setdefault(h[ID_FIELD], h["entity"])
                    ranked.append((h[ID_FIELD], float(h["distance"])))
                lists[qi].append(ranked)
        return lists, entities

    # ----------------------------------------------------------------- requests

    def _request(
        self, leg: Leg, emb: M3Embeddings, texts: Sequence[str] | None, rows: Sequence[int], limit: int,
        plan: SearchPlan, depth: int | None = None,
    ) -> FieldRequest:  # fmt: skip
        """The request of ``leg`` (``requests.LEG_REQUESTS``) for the queries ``rows``."""
        ctx = LegRequestContext(
            dense_index_kind=self._dense_index,
            ivf_nlist=self.spec.ivf_nlist,
            dense_params=self._dense_params,
            sparse_params=self._sparse_params,
            expr=plan.expr,
            expr_params=plan.params,
            analyzer_name=plan.language,
            search_depth=depth,
        )
        return leg_request(leg, query_data(leg, emb, texts, rows), limit, ctx)

    def _leg_call(
        self, leg: Leg, emb: M3Embeddings, texts: Sequence[str] | None, rows: list[int], limit: int,
        plan: SearchPlan, paged: bool,
    ) -> Call | None:  # fmt: skip
        """One plain search on ``leg`` for the queries ``rows`` of ``emb``; None when ``rows`` is empty
        (the other queries, with empty sparse vectors, match nothing). ``paged``: Milvus applies offset /
        group_by."""
        if not rows:
            return None
        req = self._request(leg, emb, texts, rows, limit, plan, depth=plan.depth if paged else None)
        kwargs = (
            self._result_kwargs(plan)
            if paged
            else {"output_fields": list(plan.output_fields), **self._partitions(plan)}
        )
        return Call(
            what=self._what_search,
            method="search",
            kwargs={"collection_name": self.collection, **req.search_kwargs(), **kwargs},
        )

    def _result_kwargs(self, plan: SearchPlan) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"output_fields": list(plan.output_fields), **self._partitions(plan)}
        if plan.group_by is not None:
            kwargs["group_by_field"] = plan.group_by  # paged here, over groups
        return kwargs

    def _hybrid_call(
        self,
        emb: M3Embeddings,
        texts: Sequence[str] | None,
        rows: Sequence[int],
        plan: SearchPlan,
        limit: int,
    ) -> Call:
        reqs = [
            self._request(leg, emb, texts, rows, plan.candidates, plan).ann_request() for leg in plan.legs
        ]
        engine = ranker_spec(plan.ranker).milvus
        assert engine is not None  # _engine_fuses sends only rankers Milvus has
        rank = engine.build(plan)
        return Call(
            what=self._what_hybrid,
            method="hybrid_search",
            kwargs={
                "collection_name": self.collection,
                "reqs": reqs,
                "ranker": rank,
                "limit": limit,
                **self._result_kwargs(plan),
            },
        )

    # ----------------------------------------------------------------- results and errors

    @staticmethod
    def _partitions(plan: SearchPlan) -> dict[str, Any]:
        """``partition_names`` for the call when the plan names partitions (engines with them only)."""
        return {"partition_names": list(plan.partition_names)} if plan.partition_names else {}

    def _guarded(self, plan: SearchPlan, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, ParamError, grpc errors
            raise engine_error(exc, plan, self.collection) from exc

    def _mapped(self, results: Any, n: int, plan: SearchPlan, what: str) -> Steps[list[list[Hit]]]:
        if len(results) != n:
            raise missing_results(what, len(results), n, plan, self.collection)
        lists: list[Sequence[Any]] = list(results)
        if self._refetch_quoted_ids and len(plan.legs) > 1 and plan.output_fields:
            refetched = []
            for r in lists:
                refetched.append((yield from self._refetch_if_quoted_ids(r, plan)))
            lists = refetched
        if plan.group_by is not None:
            return [grouped_hits(r, plan.group_by, plan.offset, plan.limit) for r in lists]
        return [ties_by_id([hit(h[ID_FIELD], h["distance"], h["entity"]) for h in r]) for r in lists]

    def _refetch_if_quoted_ids(self, result: Any, plan: SearchPlan) -> Steps[Sequence[Any]]:
        """Hybrid search on an engine that quotes ids unescaped: hits whose id holds ``'`` get their own
        fields back. Returns new hit dicts; ``result`` is left as it is."""
        hits = list(result)
        ids = [h[ID_FIELD] for h in hits]
        if not any("'" in i for i in ids if isinstance(i, str)):
            return hits
        expr, _ = render(F.in_(ID_FIELD, ids), templates=False, dialect=self._dialect)
        call = Call(
            what=f"fetch fields from {self.collection!r}",
            method="query",
            kwargs={
                "collection_name": self.collection,
                "filter": expr,
                "output_fields": list(plan.output_fields),
                "limit": len(ids),
            },
        )
        try:
            rows = (yield [call])[0]
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus errors
            raise SearchError(
                f"reading the fields of hybrid hits from {self.collection!r} failed: {exc}"
            ) from exc
        by_id = {row[ID_FIELD]: row for row in rows}
        return [
            {
                ID_FIELD: h[ID_FIELD],
                "distance": h["distance"],
                "entity": {k: v for k, v in by_id.get(h[ID_FIELD], {}).items() if k != ID_FIELD},
            }
            for h in hits
        ]
