"""The mode runner: fill (or reuse) an evaluation collection, run each mode through Milvus, score it.

The runner ingests the corpus into a Milvus collection (or reuses one), runs each mode (a table maps
a mode to its runner function) and reports nDCG@10, Recall@100 and MRR@10 per mode in an
``EvalReport``. Every search request is built by ``milvus_m3.search.requests``; pymilvus is imported
here only for the hybrid rankers.

Measured behaviour kept as it is (no change in the layout split):
  * dense searches send ``{"metric_type": "IP"}`` with no index params (the index's own defaults);
  * hybrid modes send ``search_batch`` queries per ``hybrid_search`` call, also on engines whose RRF
    numbers ranks across a batch (``Capabilities.rrf_ranks_across_batch``);
  * ``weighted`` asks for ``norm_score=False``; on engines that ignore it (``ignores_norm_score``) the
    report's note says scores were normalised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import CollectionExistsError, ConfigError, InputError
from ..schema import DENSE_FIELD, CollectionSpec, FunctionField, build_index_params, build_schema
from ..search.requests import FieldRequest, bm25_request, rrf_ranker, sparse_request, weighted_ranker
from ..types import Encoder, M3Embeddings
from .beir import BeirDataset
from .metrics import evaluate_run
from .report import EvalConfig, EvalReport, ModeResult

if TYPE_CHECKING:
    from ..search.rerank import CandidateSet, M3Reranker, M3Weights

__all__ = ["BM25_FIELD", "Run", "create_bm25_collection", "run_evaluation"]

logger = logging.getLogger("milvus_m3.evaluate")

BM25_FIELD = "bm25"
"""Sparse output field of Milvus's BM25 function in an evaluation collection."""

Run = dict[str, list[tuple[str, float]]]
"""query id -> (document id, score) pairs, as ``evaluate_run`` takes them."""

DENSE_SEARCH_PARAMS: Mapping[str, Any] = {"metric_type": "IP"}
"""The evaluation's dense search parameters: inner product, no index params (the index's defaults)."""

NO_BM25 = "the collection has no BM25 field (bm25 disabled, or an existing collection built without it)"


class _Skipped(Exception):
    """A mode that cannot run on this collection or with these inputs; the message says why."""


@dataclass
class _Job:
    """One evaluation: what every mode runner reads, and the ``m3`` candidate sets shared between modes."""

    manager: Any
    collection: str
    dataset: BeirDataset
    encoder: Encoder
    config: EvalConfig
    queries: M3Embeddings
    reranker: M3Reranker
    tune_on: BeirDataset | None
    has_bm25: bool
    sets: dict[str, list[CandidateSet]] = field(default_factory=dict)

    def candidate_sets(self, ds: BeirDataset, emb: M3Embeddings) -> list[CandidateSet]:
        """The dense + sparse candidate sets of ``ds``'s queries (searched once per split)."""
        if ds.split not in self.sets:
            sets: list[CandidateSet] = []
            for rows in _batches(len(ds.query_ids), self.config.search_batch):
                sets += self.reranker.candidate_sets(emb.select(rows), depth=self.config.candidates)
            self.sets[ds.split] = sets
        return self.sets[ds.split]


def run_evaluation(
    dataset: BeirDataset,
    encoder: Encoder,
    manager: Any,
    *,
    collection: str,
    config: EvalConfig | None = None,
    recreate: bool = False,
    colbert_encoder: Encoder | None = None,
    tune_on: BeirDataset | None = None,
    command: str | None = None,
    notes: Sequence[str] = (),
) -> EvalReport:
    """Ingest ``dataset`` into ``collection`` (or reuse it), run each mode and score it.

    ``manager`` is a ``CollectionManager``. An existing collection is reused when it holds exactly the
    dataset's documents and was built with this encoder; ``recreate`` rebuilds it. ``tune_on`` (another
    split of the same corpus) is where ``m3-tuned`` chooses its sparse weight; without it that mode is
    skipped. ``m3-all`` is skipped when no encoder gives ColBERT vectors.
    """
    from ..search.rerank import M3Reranker

    config = config or EvalConfig()
    has_bm25 = _prepare_collection(manager, collection, dataset, encoder, config, recreate)
    q = encoder.encode_queries(list(dataset.query_texts))
    reranker = M3Reranker(
        manager,
        collection,
        encoder,
        weights=config.weights(),
        candidates=config.candidates,
        rerank_depth=config.rerank_depth,
        colbert_encoder=colbert_encoder,
        check=False,
    )
    job = _Job(manager, collection, dataset, encoder, config, q, reranker, tune_on, has_bm25)
    results: list[ModeResult] = []
    skipped: dict[str, str] = {}
    for mode in config.modes:
        started = time.perf_counter()
        try:
            run, note = _MODE_RUNNERS[mode](job, mode)
        except _Skipped as exc:
            skipped[mode] = str(exc)
            continue
        metrics = evaluate_run(
            run,
            dataset.qrels,
            ndcg_k=config.ndcg_k,
            recall_k=config.recall_k,
            mrr_k=config.mrr_k,
            ignore_identical_ids=config.ignore_identical_ids,
        )
        seconds = time.perf_counter() - started
        results.append(ModeResult(mode=mode, metrics=metrics, seconds=seconds, note=note))
        logger.info("%s: %s (%.1f s)", mode, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), seconds)
    settings = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("modes", "tune_grid", "search_batch", "write_batch")
    }
    if tune_on is not None and "m3-tuned" in config.modes:
        settings["tune_split"] = tune_on.split
    return EvalReport(
        dataset=dataset.name,
        split=dataset.split,
        n_docs=len(dataset.doc_ids),
        n_queries=len(dataset.query_ids),
        encoder=encoder.model_name,
        collection=collection,
        uri=str(getattr(manager, "uri", "")),
        results=tuple(results),
        skipped=skipped,
        settings=settings,
        command=command,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------ the mode runners


def _run_single(job: _Job, mode: str) -> tuple[Run, str]:
    if mode == "bm25" and not job.has_bm25:
        raise _Skipped(NO_BM25)
    return _single_field_run(job.manager, job.collection, job.dataset, job.queries, mode, job.config), ""


def _run_hybrid(job: _Job, mode: str) -> tuple[Run, str]:
    if mode == "rrf3" and not job.has_bm25:
        raise _Skipped(NO_BM25)
    config = job.config
    run = _hybrid_run(job.manager, job.collection, job.dataset, job.queries, mode, config)
    note = ""
    if mode == "weighted":
        note = f"weights ({config.w_dense}, {config.w_sparse})"
        if job.manager.capabilities.ignores_norm_score:
            note += "; Milvus Lite normalises scores (arctan) even with norm_score=False"
    return run, note


def _run_m3(job: _Job, mode: str) -> tuple[Run, str]:
    config = job.config
    run = _m3_run(job.dataset, job.candidate_sets(job.dataset, job.queries), config.weights(), config.limit)
    return run, f"weights ({config.w_dense}, {config.w_sparse}), {config.candidates} candidates per field"


def _run_m3_tuned(job: _Job, mode: str) -> tuple[Run, str]:
    tune_on, config = job.tune_on, job.config
    if tune_on is None:
        raise _Skipped("no tuning split given (tune_on / --tune-split)")
    if tune_on.split == job.dataset.split:
        raise ConfigError("m3-tuned must tune on another split than the one evaluated")
    tq = job.encoder.encode_queries(list(tune_on.query_texts))
    w_sparse, tuned_ndcg = _tune_sparse_weight(tune_on, job.candidate_sets(tune_on, tq), config)
    weights = replace(config.weights(), sparse=w_sparse)
    run = _m3_run(job.dataset, job.candidate_sets(job.dataset, job.queries), weights, config.limit)
    note = (
        f"w_sparse={w_sparse:g} (w_dense 1) chosen on {tune_on.split} ({len(tune_on.query_ids)} queries, "
        f"nDCG@{config.ndcg_k} {tuned_ndcg:.4f} there)"
    )
    return run, note


def _run_m3_all(job: _Job, mode: str) -> tuple[Run, str]:
    config = job.config
    try:
        run = _m3_all_run(job.reranker, job.dataset, job.queries, config)
    except ConfigError as exc:
        raise _Skipped(str(exc)) from exc
    note = (
        f"weights ({config.w_dense}, {config.w_sparse}, {config.w_colbert}), "
        f"top {config.rerank_depth} m3 candidates re-scored"
    )
    return run, note


_MODE_RUNNERS: Mapping[str, Callable[[_Job, str], tuple[Run, str]]] = {
    "dense": _run_single,
    "sparse": _run_single,
    "bm25": _run_single,
    "rrf": _run_hybrid,
    "weighted": _run_hybrid,
    "rrf3": _run_hybrid,
    "m3": _run_m3,
    "m3-tuned": _run_m3_tuned,
    "m3-all": _run_m3_all,
}
"""Mode -> its runner: (run, note for the report), or ``_Skipped`` with the reason. Keys are ``ALL_MODES``."""


# ------------------------------------------------------------------------------ the collection


def _prepare_collection(
    manager: Any, name: str, dataset: BeirDataset, encoder: Encoder, config: EvalConfig, recreate: bool
) -> bool:
    """Create and fill the collection, or check and reuse it. Returns whether it has a BM25 field."""
    if manager.has_collection(name) and not recreate:
        manager.check_collection(name, dense_dim=encoder.dense_dim, model_name=encoder.model_name)
        info = manager.describe(name)
        if info.count != len(dataset.doc_ids):
            raise ConfigError(
                f"collection {name!r} holds {info.count} rows, the dataset {len(dataset.doc_ids)} documents; "
                "pass recreate (--recreate) to rebuild it"
            )
        logger.info("reusing collection %r (%d rows)", name, info.count)
        return BM25_FIELD in info.fields
    id_bytes = max((len(d.encode("utf-8")) for d in dataset.doc_ids), default=1)
    spec = CollectionSpec(
        dense_dim=encoder.dense_dim,
        model_name=encoder.model_name,
        dense_index=config.dense_index,
        id_max_length=max(64, id_bytes),
    )
    if config.bm25:
        create_bm25_collection(
            manager,
            name,
            spec,
            analyzer=config.bm25_analyzer,
            k1=config.bm25_k1,
            b=config.bm25_b,
            recreate=recreate,
        )
    else:
        manager.create_collection(name, spec=spec, recreate=recreate)
    emb = encoder.encode_documents(list(dataset.doc_texts))
    for rows in _batches(len(dataset.doc_ids), config.write_batch):
        manager.upsert(
            name,
            ids=list(dataset.doc_ids[rows.start : rows.stop]),
            texts=list(dataset.doc_texts[rows.start : rows.stop]),
            embeddings=emb.select(rows),
        )
    logger.info("ingested %d documents into %r", len(dataset.doc_ids), name)
    return config.bm25


def create_bm25_collection(
    manager: Any,
    name: str,
    spec: CollectionSpec,
    *,
    analyzer: str = "english",
    k1: float = 1.2,
    b: float = 0.75,
    recreate: bool = False,
) -> None:
    """A milvus-m3 collection plus Milvus's BM25 function: the text field gets an analyzer and a
    ``bm25`` sparse field (metric BM25) is filled by the engine from it on every insert.

    The collection is otherwise what ``CollectionManager.create_collection`` builds (same schema record),
    so the manager's ``upsert``/``get``/``check_collection`` work on it unchanged.
    """
    if manager.has_collection(name):
        if not recreate:
            raise CollectionExistsError(
                f"collection {name!r} already exists at {manager.uri}; pass recreate=True"
            )
        manager.drop(name)
    caps = manager.capabilities
    bm25 = FunctionField(
        name=BM25_FIELD, analyzer_params={"type": analyzer}, index_params={"bm25_k1": k1, "bm25_b": b}
    )
    schema = build_schema(spec, caps, function_fields=(bm25,))
    index_params = build_index_params(spec, spec.resolved_dense_index(caps), function_fields=(bm25,))
    manager.connection.call(
        f"create collection {name!r}",
        manager.client.create_collection,
        collection_name=name,
        schema=schema,
        index_params=index_params,
        consistency_level=spec.consistency_level,
    )


# ------------------------------------------------------------------------------ searches


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _to_run(dataset: BeirDataset, rows: range, res: Sequence[Sequence[Mapping[str, Any]]], run: Run) -> None:
    for qi, hits in zip(rows, res, strict=False):
        run[dataset.query_ids[qi]] = [(str(h["id"]), float(h["distance"])) for h in hits]


def _query_data(mode: str, dataset: BeirDataset, q: M3Embeddings, rows: range) -> list[Any]:
    """The queries of ``rows`` as ``mode``'s field takes them: dense rows, sparse dicts or texts."""
    if mode == "dense":
        return [q.dense[i].tolist() for i in rows]
    if mode == "sparse":
        return [q.sparse[i] for i in rows]
    return [dataset.query_texts[i] for i in rows]


def _field_request(mode: str, data: Sequence[Any], limit: int) -> FieldRequest:
    """One mode's request: dense (IP, no params), sparse (IP, nothing dropped) or BM25."""
    if mode == "dense":
        return FieldRequest(field=DENSE_FIELD, data=data, limit=limit, search_params=DENSE_SEARCH_PARAMS)
    if mode == "sparse":
        return sparse_request(data, limit=limit)
    return bm25_request(data, field=BM25_FIELD, limit=limit)


def _single_field_run(
    manager: Any, name: str, dataset: BeirDataset, q: M3Embeddings, mode: str, config: EvalConfig
) -> Run:
    run: Run = {}
    for rows in _batches(len(dataset.query_ids), config.search_batch):
        data = _query_data(mode, dataset, q, rows)
        keep = [j for j, d in enumerate(data) if len(d) > 0]  # an empty sparse query matches nothing
        res: Sequence[Sequence[Mapping[str, Any]]] = []
        if keep:
            req = _field_request(mode, [data[j] for j in keep], config.limit)
            res = manager.connection.call(
                f"search {req.field} of {name!r}",
                manager.client.search,
                collection_name=name,
                output_fields=[],
                **req.search_kwargs(),
            )
        full: list[Sequence[Mapping[str, Any]]] = [[] for _ in rows]
        for j, hits in zip(keep, res, strict=False):
            full[j] = hits
        _to_run(dataset, rows, full, run)
    return run


def _hybrid_run(
    manager: Any, name: str, dataset: BeirDataset, q: M3Embeddings, mode: str, config: EvalConfig
) -> Run:
    run: Run = {}
    ranker = (
        weighted_ranker(config.w_dense, config.w_sparse, norm_score=False)
        if mode == "weighted"
        else rrf_ranker(config.rrf_k)
    )
    fields = ("dense", "sparse", "bm25") if mode == "rrf3" else ("dense", "sparse")
    for rows in _batches(len(dataset.query_ids), config.search_batch):
        empty = [i for i in rows if not q.sparse[i]]
        if empty:
            raise InputError(
                f"query {dataset.query_ids[empty[0]]!r} has an empty sparse vector; hybrid modes need one per query",
                field="sparse",
            )
        reqs = [
            _field_request(f, _query_data(f, dataset, q, rows), config.candidates).ann_request()
            for f in fields
        ]
        res = manager.connection.call(
            f"hybrid search of {name!r}",
            manager.client.hybrid_search,
            collection_name=name,
            reqs=reqs,
            ranker=ranker,
            limit=config.limit,
            output_fields=[],
        )
        _to_run(dataset, rows, res, run)
    return run


def _m3_run(dataset: BeirDataset, sets: Sequence[CandidateSet], weights: M3Weights, limit: int) -> Run:
    return {
        qid: [(str(doc), score) for doc, score in cs.top(weights, limit)]
        for qid, cs in zip(dataset.query_ids, sets, strict=False)
    }


def _m3_all_run(reranker: M3Reranker, dataset: BeirDataset, q: M3Embeddings, config: EvalConfig) -> Run:
    run: Run = {}
    limit = min(config.limit, config.rerank_depth or config.limit)
    for rows in _batches(len(dataset.query_ids), config.search_batch):
        hits = reranker.search_many(
            [dataset.query_texts[i] for i in rows],
            limit=limit,
            mode="m3-all",
            with_text=False,
            query_embeddings=q.select(rows),
        )
        for i, hs in zip(rows, hits, strict=False):
            run[dataset.query_ids[i]] = [(str(h.id), h.score) for h in hs]
    return run


def _tune_sparse_weight(
    tune_on: BeirDataset, sets: Sequence[CandidateSet], config: EvalConfig
) -> tuple[float, float]:
    best = (-1.0, 0.0)
    for w in config.tune_grid:
        weights = replace(config.weights(), dense=1.0, sparse=float(w))
        run = _m3_run(tune_on, sets, weights, config.ndcg_k)
        ndcg = evaluate_run(
            run, tune_on.qrels, ndcg_k=config.ndcg_k, recall_k=config.ndcg_k, mrr_k=config.ndcg_k
        )[f"ndcg@{config.ndcg_k}"]
        logger.info("tuning on %s: w_sparse=%g nDCG@%d %.4f", tune_on.split, w, config.ndcg_k, ndcg)
        if ndcg > best[0] + 1e-12:
            best = (ndcg, float(w))
    return best[1], best[0]
