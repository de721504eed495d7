"""How a ``SearchPlan`` is run against Milvus: the strategy per mode, chosen once from the engine's flags.

Strategies (``PlanRunner.__init__`` picks them from ``Capabilities``; nothing here asks which engine):

* ``dense`` / ``sparse``: one plain ``search`` on that field for the whole batch.
* ``hybrid`` with the weighted ranker: one ``hybrid_search`` with one ``AnnSearchRequest`` per field,
  fused by Milvus's ``WeightedRanker``.
* ``hybrid`` with RRF: client-side when ``fusion="client"``, or ``"auto"`` on an engine whose
  ``hybrid_search`` is slow (``caps.slow_hybrid_search``): one dense and one sparse ``search`` sent at
  once, fused by ``fusion.rrf`` (the same ranking as Milvus's ``RRFRanker``; a test pins it). Otherwise
  ``hybrid_search`` with ``RRFRanker(k)``: one request for the batch, or one per query where the engine
  numbers RRF ranks across the batch (``caps.rrf_ranks_across_batch``). Grouped RRF searches always go
  through ``hybrid_search``.
* ``m3`` / ``m3-all``: ``rerank.M3Reranker`` (raw dense + sparse, + ColBERT).

Where hybrid output fields come back wrong for ids holding ``'`` (``caps.hybrid_output_by_quoted_id``)
and ids are varchar, the fields of such a result list are read again with a correctly escaped query.
Hits are built as new ``Hit`` objects; the pymilvus results are only read, never changed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from .._text import short
from ..capabilities import Capabilities
from ..collection import CollectionManager
from ..errors import ConfigError, FilterError, MilvusM3Error, SearchError
from ..filters import F, render
from ..fusion import id_order, rrf
from ..schema import ID_FIELD, METADATA_FIELD, TEXT_FIELD, CollectionSpec
from ..types import Encoder, Hit, M3Embeddings
from .options import MAX_TOPK, Fusion, SearchPlan
from .requests import (
    FieldRequest,
    dense_request,
    dense_search_params,
    ranker,
    sparse_request,
)
from .rerank import M3Reranker

__all__ = ["PlanRunner"]

Strategy = Callable[[M3Embeddings, SearchPlan], list[list[Hit]]]


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
        self._dense_index = _dense_index_kind(spec, caps.default_dense_index)
        self._dialect = caps.filter_dialect
        self._refetch_quoted_ids = caps.hybrid_output_by_quoted_id and spec.id_type == "varchar"
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._what_hybrid = f"hybrid search on {collection!r}"
        self._what_search = f"search on {collection!r}"

        self.client_rrf = fusion == "client" or (fusion == "auto" and caps.slow_hybrid_search)
        """Hybrid RRF computed here from two plain searches (see the module docstring)."""
        engine_rrf: Strategy = self._hybrid_per_query if caps.rrf_ranks_across_batch else self._hybrid_batch
        self._rrf_grouped: Strategy = engine_rrf
        self._rrf: Strategy = self._client_side_rrf if self.client_rrf else engine_rrf

    # ----------------------------------------------------------------- entry points

    def run(self, emb: M3Embeddings, plan: SearchPlan) -> list[list[Hit]]:
        """Hits per query of ``emb`` for a hybrid / dense / sparse plan (sparse weights pruned as the
        collection's documents were: ``CollectionSpec.prune_sparse``)."""
        if self.spec.sparse_top_k is not None or self.spec.sparse_mass is not None:
            emb = dataclasses.replace(emb, sparse=self.spec.prune_sparse(emb.sparse))
        return self._strategy(plan)(emb, plan)

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
        if plan.params:
            raise ConfigError(
                f"mode {plan.mode!r} takes a raw filter expression or runs without templates; "
                "pass the filter as a string, or use mode='hybrid'"
            )
        if encoder is None:
            raise ConfigError(
                f"mode {plan.mode!r} needs an encoder; pass encoder= when creating the searcher"
            )
        reranker = M3Reranker(
            self.manager,
            self.collection,
            encoder,
            candidates=plan.candidates,
            dense_search_params=self.dense_search_params(plan.candidates)["params"],
            check=False,
        )
        mode: Literal["m3", "m3-all"] = "m3" if plan.mode == "m3" else "m3-all"
        results = reranker.search_many(
            texts,
            limit=plan.depth,
            mode=mode,
            filter=plan.expr or None,
            query_embeddings=embeddings,
        )
        return [hits[plan.offset :] for hits in results]

    def dense_search_params(self, depth: int) -> dict[str, Any]:
        """Dense search parameters for a search ``depth`` deep on this collection's index."""
        return dense_search_params(
            self._dense_index, depth, ivf_nlist=self.spec.ivf_nlist, overrides=self._dense_params
        )

    # ----------------------------------------------------------------- strategies

    def _strategy(self, plan: SearchPlan) -> Strategy:
        if plan.mode != "hybrid":
            return self._plain
        if plan.ranker != "rrf":
            return self._hybrid_batch
        return self._rrf if plan.group_by is None else self._rrf_grouped

    def _plain(self, emb: M3Embeddings, plan: SearchPlan) -> list[list[Hit]]:
        results = self._guarded(plan, lambda: self._plain_search(emb, plan))
        return self._mapped(results, len(emb), plan, f"{plan.mode} search")

    def _hybrid_batch(self, emb: M3Embeddings, plan: SearchPlan) -> list[list[Hit]]:
        results = self._guarded(plan, lambda: self._hybrid_search(emb.dense, emb.sparse, plan))
        return self._mapped(results, len(emb), plan, "hybrid search")

    def _hybrid_per_query(self, emb: M3Embeddings, plan: SearchPlan) -> list[list[Hit]]:
        """One hybrid request per query: the engine numbers RRF ranks across a batch (the first hit of
        query 2 gets 1 / (k + hits of query 1 + 1)); only a one-query request is fused right there."""

        def one_by_one() -> Any:
            results = []
            for i in range(len(emb)):
                one = self._hybrid_search(emb.dense[i : i + 1], emb.sparse[i : i + 1], plan)
                if len(one) != 1:
                    return one
                results.append(one[0])
            return results

        return self._mapped(self._guarded(plan, one_by_one), len(emb), plan, "hybrid search")

    def _client_side_rrf(self, emb: M3Embeddings, plan: SearchPlan) -> list[list[Hit]]:
        """Hybrid RRF computed here: one dense and one sparse search (sent concurrently), fused by fusion.rrf."""
        n = len(emb)
        k = plan.candidates
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="milvus-m3-search"
            )
        output_fields = list(plan.output_fields)
        futures = [
            self._pool.submit(self._search_one, req, output_fields, plan.partition_names)
            for req in (self._dense(list(emb.dense), k, plan), self._sparse(list(emb.sparse), k, plan))
        ]
        dense_res, sparse_res = self._guarded(plan, lambda: [f.result() for f in futures])
        return self._fused(dense_res, sparse_res, n, plan)

    def _fused(self, dense_res: Any, sparse_res: Any, n: int, plan: SearchPlan) -> list[list[Hit]]:
        """Client-side RRF of one dense and one sparse result list per query."""
        if len(dense_res) != n or len(sparse_res) != n:
            raise self._missing_results(
                "dense and sparse searches", min(len(dense_res), len(sparse_res)), n, plan
            )
        out: list[list[Hit]] = []
        for d_hits, s_hits in zip(dense_res, sparse_res, strict=False):
            entities: dict[Any, Any] = {}
            lists = []
            for hits in (d_hits, s_hits):
                ranked = []
                for h in hits:
                    entities.setdefault(h[ID_FIELD], h["entity"])
                    ranked.append((h[ID_FIELD], float(h["distance"])))
                lists.append(ranked)
            fused = rrf(lists, k=plan.rrf_k, limit=plan.depth)[plan.offset :]
            out.append([_hit(i, score, entities[i]) for i, score in fused])
        return out

    # ----------------------------------------------------------------- requests

    def _dense(
        self, data: Sequence[Any], limit: int, plan: SearchPlan, depth: int | None = None
    ) -> FieldRequest:
        return dense_request(
            data,
            limit=limit,
            index_kind=self._dense_index,
            ivf_nlist=self.spec.ivf_nlist,
            params=self._dense_params,
            expr=plan.expr,
            expr_params=plan.params,
            search_depth=depth,
        )

    def _sparse(self, data: Sequence[Any], limit: int, plan: SearchPlan) -> FieldRequest:
        return sparse_request(
            data, limit=limit, params=self._sparse_params, expr=plan.expr, expr_params=plan.params
        )

    def _search_one(self, req: FieldRequest, output_fields: list[str], partitions: Sequence[str] = ()) -> Any:
        conn = self.manager.connection
        kwargs = self._one_kwargs(req, output_fields, partitions)
        return conn.call(self._what_search, conn.client.search, **kwargs)

    def _one_kwargs(
        self, req: FieldRequest, output_fields: list[str], partitions: Sequence[str]
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {"partition_names": list(partitions)} if partitions else {}
        return {
            "collection_name": self.collection,
            "output_fields": output_fields,
            **req.search_kwargs(),
            **extra,
        }

    def _result_kwargs(self, plan: SearchPlan) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"output_fields": list(plan.output_fields)}
        if plan.group_by is not None:
            kwargs["group_by_field"] = plan.group_by  # paged here, over groups
        elif plan.offset:
            kwargs["offset"] = plan.offset
        if plan.partition_names:
            kwargs["partition_names"] = list(plan.partition_names)
        return kwargs

    def _hybrid_search(self, dense: Any, sparse: Sequence[Mapping[int, float]], plan: SearchPlan) -> Any:
        conn = self.manager.connection
        return conn.call(
            self._what_hybrid, conn.client.hybrid_search, **self._hybrid_kwargs(dense, sparse, plan)
        )

    def _hybrid_kwargs(
        self, dense: Any, sparse: Sequence[Mapping[int, float]], plan: SearchPlan
    ) -> dict[str, Any]:
        k = plan.candidates
        reqs = [
            self._dense(list(dense), k, plan).ann_request(),
            self._sparse(list(sparse), k, plan).ann_request(),
        ]
        # Grouped: the same group can come back once per request (see the searcher's module docstring).
        limit = min(MAX_TOPK, len(reqs) * plan.depth) if plan.group_by is not None else plan.limit
        return {
            "collection_name": self.collection,
            "reqs": reqs,
            "ranker": ranker(plan.ranker, rrf_k=plan.rrf_k, weights=plan.weights),
            "limit": limit,
            **self._result_kwargs(plan),
        }

    def _plain_search(self, emb: M3Embeddings, plan: SearchPlan) -> Any:
        conn = self.manager.connection
        return conn.call(self._what_search, conn.client.search, **self._plain_kwargs(emb, plan))

    def _plain_kwargs(self, emb: M3Embeddings, plan: SearchPlan) -> dict[str, Any]:
        limit = plan.depth if plan.group_by is not None else plan.limit
        if plan.mode == "dense":
            req = self._dense(list(emb.dense), limit, plan, depth=plan.depth)
        else:
            req = self._sparse(emb.sparse, limit, plan)
        return {"collection_name": self.collection, **req.search_kwargs(), **self._result_kwargs(plan)}

    # ----------------------------------------------------------------- results and errors

    def _guarded(self, plan: SearchPlan, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException, ParamError, grpc errors
            raise self._engine_error(exc, plan) from exc

    def _mapped(self, results: Any, n: int, plan: SearchPlan, what: str) -> list[list[Hit]]:
        if len(results) != n:
            raise self._missing_results(what, len(results), n, plan)
        lists: list[Sequence[Any]] = list(results)
        if self._refetch_quoted_ids and plan.mode == "hybrid" and plan.output_fields:
            lists = [self._refetch_if_quoted_ids(r, plan) for r in lists]
        if plan.group_by is not None:
            return [_grouped_hits(r, plan.group_by, plan.offset, plan.limit) for r in lists]
        return [_ties_by_id([_hit(h[ID_FIELD], h["distance"], h["entity"]) for h in r]) for r in lists]

    def _refetch_if_quoted_ids(self, result: Any, plan: SearchPlan) -> Sequence[Any]:
        """Hybrid search on an engine that quotes ids unescaped: hits whose id holds ``'`` get their own
        fields back. Returns new hit dicts; ``result`` is left as it is."""
        hits = list(result)
        ids = [h[ID_FIELD] for h in hits]
        if not any("'" in i for i in ids if isinstance(i, str)):
            return hits
        expr, _ = render(F.in_(ID_FIELD, ids), templates=False, dialect=self._dialect)
        conn = self.manager.connection
        try:
            rows = conn.call(
                f"fetch fields from {self.collection!r}",
                conn.client.query,
                collection_name=self.collection,
                filter=expr,
                output_fields=list(plan.output_fields),
                limit=len(ids),
            )
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

    def _missing_results(self, what: str, got: int, n: int, plan: SearchPlan) -> SearchError:
        """A result list missing for a query is an error, never 'no hits'."""
        if plan.expr:
            return FilterError(
                f"the engine rejected the filter {short(plan.expr)!r} on collection {self.collection!r}: "
                f"the {what} returned {got} result lists for {n} queries (Milvus Lite answers a "
                "bad filter in a hybrid search this way); check field names, value types and syntax"
            )
        return SearchError(
            f"the {what} on {self.collection!r} returned {got} result lists for {n} queries; "
            "the engine failed without saying why (see the Milvus log)"
        )

    def _engine_error(self, exc: Exception, plan: SearchPlan) -> MilvusM3Error:
        msg = " ".join(str(getattr(exc, "message", "") or exc).split())
        lowered = msg.lower()
        if plan.expr and any(s in lowered for s in ("expr", "filter", "phyfilterbitsnode", "parse")):
            return FilterError(
                f"the engine rejected the filter {short(plan.expr)!r} on collection {self.collection!r}: "
                f"{short(msg, 300)}. Check field names, value types and syntax, or build the filter with "
                "milvus_m3.filters.F"
            )
        return SearchError(f"{plan.mode} search on collection {self.collection!r} failed: {short(msg, 300)}")


# --------------------------------------------------------------------- result mapping


def _hit(doc: Any, distance: Any, entity: Mapping[str, Any]) -> Hit:
    """A new Hit from one engine hit; ``entity`` is copied, never changed."""
    fields = dict(entity)
    text = fields.pop(TEXT_FIELD, None)
    metadata = fields.pop(METADATA_FIELD, None)
    return Hit(doc, float(distance), text, {} if metadata is None else metadata, fields)


def _ties_by_id(hits: list[Hit]) -> list[Hit]:
    """Equal scores in id order: Milvus sorts fused hits with an unstable sort, so without this the
    order of tied hits could change with the other queries of a batch."""
    if any(a.score == b.score for a, b in itertools.pairwise(hits)):
        hits.sort(key=lambda h: (-h.score, id_order(h.id)))
    return hits


def _grouped_hits(result: Any, group_by: str, offset: int, limit: int) -> list[Hit]:
    seen: set[Any] = set()
    out: list[Hit] = []
    end = offset + limit
    for h in result:
        key = h["entity"].get(group_by)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > offset:
            out.append(_hit(h[ID_FIELD], h["distance"], h["entity"]))
            if len(seen) >= end:
                break
    return _ties_by_id(out)


def _dense_index_kind(spec: CollectionSpec, default: str) -> str:
    kind = spec.dense_index.upper()
    return default.upper() if kind == "AUTO" else kind
