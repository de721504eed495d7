"""BGE-M3's paper fusion, client side: ``m3`` (raw dense + sparse scores) and ``m3-all`` (+ ColBERT).

Milvus's rankers stop at RRF and a weighted sum of normalised scores. The BGE-M3 paper fuses raw scores:

    m3:      s = w_dense * dense + w_sparse * sparse                       (defaults 1.0, 0.3)
    m3-all:  s = w_dense * dense + w_sparse * sparse + w_colbert * colbert (defaults 1.0, 0.3, 1.0)

``m3`` takes the union of the dense and the sparse candidate lists (``candidates`` each). A candidate
that only one list found gets its exact score for the other field from its stored vector, fetched from
Milvus (``CollectionManager.get``), never zero. ``m3-all`` re-ranks the ``m3`` candidates with the
ColBERT score, computing document ColBERT vectors from the stored text at query time (the default) or
taking them from a ``doc_colbert`` callable (vectors you stored yourself).

Scale. The paper (and this module, ``score_scale="sum"``) reports the weighted sum. FlagEmbedding's
``BGEM3FlagModel.compute_score(...)["colbert+sparse+dense"]`` divides it by the weight sum
(``w_dense + w_sparse + w_colbert``); ``score_scale="mean"`` gives that number. The ranking is the same.

ColBERT score, as FlagEmbedding defines it: query and document token vectors (the [CLS] position
dropped, rows L2-normalised), ``colbert = mean over query tokens of max over document tokens of q . d``.
FlagEmbedding's batched ``compute_score`` pads passages with zero vectors, so for a query token whose
every dot product with a shorter passage is negative its max becomes 0 instead; compare one pair per
batch (``batch_size=1``) or passages of one length to see the exact definition.

Storing ColBERT vectors costs ``colbert_dim`` floats per token: 4 KiB a token for BGE-M3 (1024-d float32),
2 KiB in float16, about 0.6-1.2 MiB for a 300-token passage against 4 KiB for its dense vector. Milvus
servers of the 2.6 line can store such token vectors as an embedding list (an array of vectors with a
MAX_SIM index), but Milvus Lite 2.5.1, the embedded default, refuses embedding-list indexes. Hence
recomputation is the default.

The Milvus calls here (one ANN request per field, built by ``requests.py``; ``get`` of stored vectors)
go through the manager's retrying connection. The score math (``m3_scores``, the tie order by id) is
``fusion.py``'s; the lexical score is ``sparse.lexical_score`` (``sparse_score`` here is the same function).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..collection.identity import identity
from ..collection.manager import CollectionManager
from ..collection.schema import DENSE_FIELD, METADATA_FIELD, SPARSE_FIELD, TEXT_FIELD
from ..errors import ConfigError, InputError, SearchError
from ..fusion import colbert_score, dense_score, id_order, m3_scores
from ..types import ColbertEncoder, Encoder, Hit, M3Embeddings, SparseVector
from .candidates import CandidateSet, DocColbert, M3Weights, Mode, ScoreScale, sparse_score
from .options import check_queries
from .requests import DEFAULT_DROP_RATIO_SEARCH, FieldRequest, dense_request, sparse_request

__all__ = [
    "CandidateSet",
    "M3Reranker",
    "M3Weights",
    "colbert_score",
    "dense_score",
    "sparse_score",
]

logger = logging.getLogger("milvus_m3.rerank")

DEFAULT_CANDIDATES = 100
"""Candidates per field (dense list, sparse list) for ``m3``."""
GET_BATCH = 512
"""Ids per ``get`` when fetching stored vectors or texts."""

# ------------------------------------------------------------------------------- the reranker


class M3Reranker:
    """``m3`` and ``m3-all`` search over a milvus-m3 collection.

    ``encoder`` embeds the queries (dense + sparse) with the model the collection was built with.
    ``colbert_encoder`` (default: ``encoder``) gives ColBERT vectors for ``m3-all``: an ``M3Embedder``
    built with ``colbert=True``, any encoder declaring ``types.ColbertEncoder`` (``colbert_dim`` and
    ``encode_*(texts, colbert=True)``), or one whose ``encode_*`` return ``M3Embeddings.colbert``. ``doc_colbert`` replaces the query-time recomputation of document
    ColBERT vectors. ``candidates`` is the depth of each ANN list (at least ``limit`` is used);
    ``rerank_depth`` caps how many ``m3`` candidates ``m3-all`` re-scores (None: all of them).
    ``dense_search_params`` / ``sparse_search_params`` go to Milvus as the requests' ``params``
    (e.g. ``{"ef": 200}`` for HNSW; ``ef`` should be at least ``candidates``).
    """

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        encoder: Encoder,
        *,
        weights: M3Weights | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        rerank_depth: int | None = None,
        colbert_encoder: Encoder | None = None,
        doc_colbert: DocColbert | None = None,
        score_scale: ScoreScale = "sum",
        dense_search_params: Mapping[str, Any] | None = None,
        sparse_search_params: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ConfigError(f"candidates must be an int >= 1, got {candidates!r}")
        if rerank_depth is not None and (
            isinstance(rerank_depth, bool) or not isinstance(rerank_depth, int) or rerank_depth < 1
        ):
            raise ConfigError(f"rerank_depth must be an int >= 1 or None, got {rerank_depth!r}")
        if score_scale not in ("sum", "mean"):
            raise ConfigError(
                f"score_scale must be 'sum' (the paper's weighted sum) or 'mean' (FlagEmbedding's), got {score_scale!r}"
            )
        self.manager = manager
        self.collection = collection
        self.encoder = encoder
        self.weights = weights or M3Weights()
        self.candidates = candidates
        self.rerank_depth = rerank_depth
        self.colbert_encoder = colbert_encoder
        self.doc_colbert = doc_colbert
        self.score_scale: ScoreScale = score_scale
        self.dense_search_params = dict(dense_search_params or {})
        self.sparse_search_params = dict(
            sparse_search_params or {"drop_ratio_search": DEFAULT_DROP_RATIO_SEARCH}
        )
        if check:
            manager.check_collection(collection, **identity(encoder))

    def __repr__(self) -> str:
        return f"M3Reranker(collection={self.collection!r}, weights={self.weights}, candidates={self.candidates})"

    # -- public ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: Mode = "m3",
        filter: str | None = None,
        with_text: bool = True,
    ) -> list[Hit]:
        """Top ``limit`` hits for one query (see ``search_many``)."""
        return self.search_many([query], limit=limit, mode=mode, filter=filter, with_text=with_text)[0]

    def search_many(
        self,
        queries: Sequence[str],
        *,
        limit: int = 10,
        mode: Mode = "m3",
        filter: str | None = None,
        with_text: bool = True,
        query_embeddings: M3Embeddings | None = None,
        candidates: int | None = None,
        dense_search_params: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """Top ``limit`` hits per query. ``Hit.score`` is the fused score (see ``score_scale``);
        ``Hit.fields`` holds ``dense_score``, ``sparse_score`` (and ``colbert_score`` for m3-all).

        ``filter`` is a rendered Milvus boolean expression applied to both ANN requests.
        ``with_text`` fetches text and metadata of the returned hits. ``query_embeddings`` skips
        encoding the queries (dense + sparse; ColBERT is still computed for m3-all when absent).
        ``candidates`` / ``dense_search_params``: this call's, instead of the reranker's (one reranker
        serves calls of any depth: ``HybridSearcher`` builds one per collection).
        """
        texts = check_queries(queries)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be an int >= 1, got {limit!r}")
        if mode not in ("m3", "m3-all"):
            raise ConfigError(f"mode must be 'm3' or 'm3-all', got {mode!r}")
        if mode == "m3-all" and self.rerank_depth is not None and limit > self.rerank_depth:
            raise ConfigError(
                f"limit {limit} is more than rerank_depth {self.rerank_depth}; raise rerank_depth"
            )
        if not texts:
            return []
        q = query_embeddings if query_embeddings is not None else self.encoder.encode_queries(texts)
        if len(q) != len(texts):
            raise InputError(f"{len(texts)} queries but {len(q)} query embeddings", field="query_embeddings")
        depth = max(self.candidates if candidates is None else candidates, limit)
        sets = self.candidate_sets(q, depth=depth, filter=filter, dense_search_params=dense_search_params)
        if mode == "m3":
            ranked = [self._scored_m3(cs, limit) for cs in sets]
        else:
            ranked = self._scored_all(texts, q, sets, limit)
        return self._hits(ranked, with_text)

    def candidate_sets(
        self,
        queries: M3Embeddings,
        *,
        depth: int | None = None,
        filter: str | None = None,
        dense_search_params: Mapping[str, Any] | None = None,
    ) -> list[CandidateSet]:
        """Per query: the dense and sparse top-``depth`` lists from Milvus, united, with exact scores
        (``dense_search_params``: this call's, instead of the reranker's).

        A candidate missing from one list gets that field's score from its stored vector.
        """
        depth = depth or self.candidates
        dense_q = np.asarray(queries.dense, dtype=np.float32)
        sparse_q = [{int(k): float(np.float32(v)) for k, v in s.items()} for s in queries.sparse]
        # The index kind is not known here: no default parameters, dense_search_params go as given.
        dense_lists = self._search_field(
            dense_request(
                [row.tolist() for row in dense_q],
                limit=depth,
                params=self.dense_search_params if dense_search_params is None else dense_search_params,
                expr=filter or "",
            )
        )
        sparse_lists = self._search_sparse(sparse_q, depth, filter)

        need_dense: dict[str | int, None] = {}
        need_sparse: dict[str | int, None] = {}
        for dl, sl in zip(dense_lists, sparse_lists, strict=False):
            for doc in sl:
                if doc not in dl:
                    need_dense[doc] = None
            for doc in dl:
                if doc not in sl:
                    need_sparse[doc] = None
        # One round trip for both fields: a candidate missing from one list needs that field's vector.
        both = self._fetch_fields(
            list(dict.fromkeys([*need_dense, *need_sparse])), (DENSE_FIELD, SPARSE_FIELD)
        )
        dense_vecs = {doc: both[doc][DENSE_FIELD] for doc in need_dense if doc in both}
        sparse_vecs = {doc: both[doc][SPARSE_FIELD] for doc in need_sparse if doc in both}

        out: list[CandidateSet] = []
        for i, (dl, sl) in enumerate(zip(dense_lists, sparse_lists, strict=False)):
            ids = list(dl) + [d for d in sl if d not in dl]
            d_scores = np.empty(len(ids))
            s_scores = np.empty(len(ids))
            for j, doc in enumerate(ids):
                if doc in dl:
                    d_scores[j] = dl[doc]
                else:
                    d_scores[j] = dense_score(dense_q[i], _need(dense_vecs, doc, DENSE_FIELD))
                if doc in sl:
                    s_scores[j] = sl[doc]
                else:
                    s_scores[j] = sparse_score(sparse_q[i], _need(sparse_vecs, doc, SPARSE_FIELD))
            out.append(
                CandidateSet(
                    ids=tuple(ids),
                    dense=d_scores,
                    sparse=s_scores,
                    from_dense=np.array([d in dl for d in ids], dtype=bool),
                    from_sparse=np.array([d in sl for d in ids], dtype=bool),
                )
            )
        return out

    # -- scoring -----------------------------------------------------------------------------

    def _scale(self, mode: Mode) -> float:
        return 1.0 if self.score_scale == "sum" else 1.0 / self.weights.total(mode)

    def _scored_m3(self, cs: CandidateSet, limit: int) -> list[tuple[str | int, float, dict[str, float]]]:
        scale = self._scale("m3")
        index = {doc: j for j, doc in enumerate(cs.ids)}
        return [
            (
                doc,
                score * scale,
                {"dense_score": float(cs.dense[index[doc]]), "sparse_score": float(cs.sparse[index[doc]])},
            )
            for doc, score in cs.top(self.weights, limit)
        ]

    def _scored_all(
        self, texts: list[str], q: M3Embeddings, sets: list[CandidateSet], limit: int
    ) -> list[list[tuple[str | int, float, dict[str, float]]]]:
        q_colbert = q.colbert if q.colbert is not None else self._colbert(texts, "queries")
        pools = [cs.top(self.weights, self.rerank_depth) for cs in sets]
        wanted = list(dict.fromkeys(doc for pool in pools for doc, _ in pool))
        doc_vecs = self._doc_colbert(wanted)
        w = self.weights
        scale = self._scale("m3-all")
        out = []
        for qi, (cs, pool) in enumerate(zip(sets, pools, strict=False)):
            index = {doc: j for j, doc in enumerate(cs.ids)}
            docs = [doc for doc, _ in pool]
            d = np.array([cs.dense[index[doc]] for doc in docs], dtype=np.float64)
            s = np.array([cs.sparse[index[doc]] for doc in docs], dtype=np.float64)
            c = np.array([colbert_score(q_colbert[qi], doc_vecs[doc]) for doc in docs], dtype=np.float64)
            fused = m3_scores(d, s, c, w_dense=w.dense, w_sparse=w.sparse, w_colbert=w.colbert)
            rows = [
                (
                    doc,
                    float(fused[j]) * scale,
                    {"dense_score": float(d[j]), "sparse_score": float(s[j]), "colbert_score": float(c[j])},
                )
                for j, doc in enumerate(docs)
            ]
            rows.sort(key=lambda r: (-r[1], id_order(r[0])))
            out.append(rows[:limit])
        return out

    def _colbert(self, texts: Sequence[str], kind: str) -> list[npt.NDArray[np.float32]]:
        enc = self.colbert_encoder or self.encoder
        return encode_colbert(enc, texts, kind)

    def _doc_colbert(self, ids: list[str | int]) -> dict[str | int, npt.NDArray[np.float32]]:
        if not ids:
            return {}
        rows = {doc: row[TEXT_FIELD] for doc, row in self._fetch_fields(ids, (TEXT_FIELD,)).items()}
        texts = [str(_need(rows, doc, TEXT_FIELD)) for doc in ids]
        if self.doc_colbert is not None:
            vecs = list(self.doc_colbert(ids, texts))
        else:
            vecs = self._colbert(texts, "documents")
        if len(vecs) != len(ids):
            raise InputError(f"{len(vecs)} ColBERT arrays for {len(ids)} documents", field="colbert")
        return dict(zip(ids, vecs, strict=False))

    # -- Milvus ------------------------------------------------------------------------------

    def _search_field(self, req: FieldRequest) -> list[dict[str | int, float]]:
        if not req.data:
            return []
        client = self.manager.client
        res = self.manager.connection.call(
            f"search {req.field} of {self.collection!r}",
            client.search,
            collection_name=self.collection,
            output_fields=[],
            **req.search_kwargs(),
        )
        if len(res) != len(req.data):
            raise SearchError(
                f"Milvus answered {len(res)} result lists for {len(req.data)} queries on {req.field!r}"
            )
        return [{hit["id"]: float(hit["distance"]) for hit in hits} for hits in res]

    def _search_sparse(
        self, queries: list[SparseVector], limit: int, filter: str | None
    ) -> list[dict[str | int, float]]:
        # Milvus refuses an empty sparse query vector; a query with no weight matches nothing.
        out: list[dict[str | int, float]] = [{} for _ in queries]
        rows = [i for i, s in enumerate(queries) if s]
        found = self._search_field(
            sparse_request(
                [queries[i] for i in rows], limit=limit, params=self.sparse_search_params, expr=filter or ""
            )
        )
        for i, hits in zip(rows, found, strict=False):
            out[i] = hits
        return out

    def _fetch_fields(
        self, ids: list[str | int], fields: Sequence[str] | None = None
    ) -> dict[str | int, dict[str, Any]]:
        """Rows of ``ids`` by id, ``GET_BATCH`` ids per ``get`` (``fields`` None: the default fields)."""
        got: dict[str | int, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {} if fields is None else {"output_fields": list(fields)}
        for start in range(0, len(ids), GET_BATCH):
            for row in self.manager.get(self.collection, ids[start : start + GET_BATCH], **kwargs):
                got[row["id"]] = row
        return got

    def _hits(
        self, ranked: list[list[tuple[str | int, float, dict[str, float]]]], with_text: bool
    ) -> list[list[Hit]]:
        info: dict[str | int, dict[str, Any]] = {}
        if with_text:
            info = self._fetch_fields(list(dict.fromkeys(doc for rows in ranked for doc, _, _ in rows)))
        out = []
        for rows in ranked:
            hits = []
            for doc, score, parts in rows:
                row = info.get(doc, {})
                extra = {k: v for k, v in row.items() if k not in ("id", TEXT_FIELD, METADATA_FIELD)}
                hits.append(
                    Hit(
                        id=doc,
                        score=float(score),
                        text=row.get(TEXT_FIELD),
                        metadata=row.get(METADATA_FIELD) or {},
                        fields={**extra, **parts},
                    )
                )
            out.append(hits)
        return out


def _need(rows: Mapping[str | int, Any], doc: str | int, field: str) -> Any:
    if doc not in rows:
        raise SearchError(
            f"document {doc!r} was in a {field!r} candidate list but get() did not return it "
            "(deleted meanwhile?); search again"
        )
    return rows[doc]


def encode_colbert(encoder: Encoder, texts: Sequence[str], kind: str) -> list[npt.NDArray[np.float32]]:
    """ColBERT vectors of ``texts`` (``kind`` "queries" or "documents") from ``encoder``.

    Asks with ``colbert=True`` when the encoder declares the ability (``types.ColbertEncoder``:
    ``colbert_dim`` and ``encode_*(texts, colbert=...)``, as ``M3Embedder``), else uses whatever
    ``M3Embeddings.colbert`` the encoder gives.
    """
    if isinstance(encoder, ColbertEncoder):
        cfn = encoder.encode_queries if kind == "queries" else encoder.encode_documents
        emb = cfn(list(texts), colbert=True)
    else:
        fn = encoder.encode_queries if kind == "queries" else encoder.encode_documents
        emb = fn(list(texts))
    if emb.colbert is None:
        raise ConfigError(
            f"m3-all needs ColBERT vectors, and {encoder.model_name!r} gives none; use M3Embedder (which computes "
            "them with colbert=True) as colbert_encoder, or pass doc_colbert= with stored vectors"
        )
    return [np.asarray(v, dtype=np.float32) for v in emb.colbert]
