"""The mode runner: fill (or reuse) an evaluation collection, run each mode through the product, score it.

The corpus goes in through ``CollectionManager`` (a ``CollectionSpec`` with ``bm25=True`` gives the BM25
leg), and every leg and fused mode runs through ``HybridSearcher`` (``legs=``, the same code users
call), so the harness measures what a user gets; ``m3`` / ``m3-all`` run through ``M3Reranker``;
``M+rerank`` variants (a cross-encoder over a mode's top hits) come from ``evaluate.rerank``.
Each mode is scored per query and as means (``EvalReport``), with a paired randomization test of each
fused mode against the best of its own legs. A query whose sparse vector is empty is an ordinary
query (its sparse list is empty). An existing collection is reused only when everything that shaped
its contents agrees: the spec (BM25 analyzer, k1, b, ...), the encoder (its fingerprint or
``config_key``) and the row count.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..collection.legs import LEG_TABLE
from ..collection.schema import BM25_FIELD, CollectionSpec
from ..errors import CollectionExistsError, ConfigError
from ..types import CacheKeyed, Encoder, Fingerprinted, M3Embeddings, Reranker
from .beir import BeirDataset
from .metrics import evaluate_run, randomization_test
from .report import EVAL_MODES, FUSED_LEGS, EvalConfig, EvalReport, ModeResult, RunnerKind
from .rerank import RERANK_SUFFIX, load_cross_encoder, mode_result, rerank_variant, reranked_modes

if TYPE_CHECKING:
    from ..search import HybridSearcher
    from ..search.rerank import CandidateSet, M3Reranker, M3Weights

__all__ = ["BM25_FIELD", "Run", "create_bm25_collection", "run_evaluation"]

logger = logging.getLogger("milvus_m3.evaluate")

Run = dict[str, list[tuple[str, float]]]
"""query id -> (document id, score) pairs, as ``evaluate_run`` takes them."""

NO_BM25 = "the collection has no BM25 field (bm25 disabled, or an existing collection built without it)"


class _Skipped(Exception):
    """A mode that cannot run on this collection or with these inputs; the message says why."""


@dataclass
class _Job:
    """One evaluation: what every mode runner reads, and what modes share (candidate sets, leg runs)."""

    manager: Any
    collection: str
    dataset: BeirDataset
    encoder: Encoder
    config: EvalConfig
    queries: M3Embeddings
    reranker: M3Reranker
    searcher: HybridSearcher
    tune_on: BeirDataset | None
    has_bm25: bool
    sets: dict[str, list[CandidateSet]] = field(default_factory=dict)
    tune_queries: M3Embeddings | None = None

    def candidate_sets(self, ds: BeirDataset, emb: M3Embeddings) -> list[CandidateSet]:
        """The dense + sparse candidate sets of ``ds``'s queries (searched once per split)."""
        if ds.split not in self.sets:
            sets: list[CandidateSet] = []
            for rows in _batches(len(ds.query_ids), self.config.search_batch):
                sets += self.reranker.candidate_sets(emb.select(rows), depth=self.config.candidates)
            self.sets[ds.split] = sets
        return self.sets[ds.split]

    def tune_embeddings(self) -> M3Embeddings:
        assert self.tune_on is not None
        if self.tune_queries is None:
            self.tune_queries = self.encoder.encode_queries(list(self.tune_on.query_texts))
        return self.tune_queries

    def search(self, ds: BeirDataset, emb: M3Embeddings, legs: tuple[str, ...], **options: Any) -> Run:
        """``ds``'s queries through ``HybridSearcher`` on ``legs``, ``search_batch`` queries per call."""
        cfg = self.config
        run: Run = {}
        for rows in _batches(len(ds.query_ids), cfg.search_batch):
            hits = self.searcher.search_embeddings(
                emb.select(rows),
                texts=[ds.query_texts[i] for i in rows],
                legs=legs,
                limit=cfg.limit,
                candidate_limit=cfg.candidates,
                output_fields=[],
                **options,
            )
            for i, hs in zip(rows, hits, strict=True):
                run[ds.query_ids[i]] = [(str(h.id), h.score) for h in hs]
        return run


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
    cross_encoder: Reranker | None = None,
) -> EvalReport:
    """Ingest ``dataset`` into ``collection`` (or reuse it), run each mode and score it.

    ``manager`` is a ``CollectionManager``. An existing collection is reused when it holds exactly the
    dataset's documents and was built with this encoder and these BM25 settings; ``recreate`` rebuilds
    it. ``tune_on`` (another split of the same corpus) is where ``m3-tuned`` chooses its sparse weight
    and ``wrrf3`` its leg weights; without it those modes are skipped. ``m3-all`` is skipped when no
    encoder gives ColBERT vectors. With ``config.rerank`` each mode of ``rerank_modes`` (all, when
    empty) also runs as ``M+rerank`` (``evaluate.rerank``); ``cross_encoder`` is that model when the
    caller loaded it, else ``CrossEncoderReranker(config.rerank)`` loads.
    """
    from ..search import HybridSearcher
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
    searcher = HybridSearcher(manager, collection, encoder, rrf_k=config.rrf_k, check=False)
    job = _Job(manager, collection, dataset, encoder, config, q, reranker, searcher, tune_on, has_bm25)
    cross = load_cross_encoder(config, cross_encoder)
    results: list[ModeResult] = []
    skipped: dict[str, str] = {}
    for mode in config.modes:
        started = time.perf_counter()
        try:
            run, note = _RUNNERS[EVAL_MODES[mode].runner](job, mode)
        except _Skipped as exc:
            skipped[mode] = str(exc)
            if cross is not None and mode in reranked_modes(config):
                skipped[mode + RERANK_SUFFIX] = f"{mode} did not run"
            continue
        seconds = time.perf_counter() - started
        result = mode_result(mode, run, dataset, config, seconds=seconds, note=note)
        results.append(replace(result, significance=_significance(result, results, FUSED_LEGS.get(mode, ()))))
        logger.info(
            "%s: %s (%.1f s)", mode, ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()), seconds
        )
        if cross is not None and mode in reranked_modes(config):
            variant = rerank_variant(result, dataset, config, cross)
            results.append(replace(variant, significance=_significance(variant, results, (mode,))))
    settings = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("modes", "tune_grid", "search_batch", "write_batch")
    }
    if tune_on is not None and any(m in config.modes for m in ("m3-tuned", "wrrf3")):
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


def _significance(result: ModeResult, done: Sequence[ModeResult], against: Sequence[str]) -> dict[str, Any]:
    """The paired randomization test of ``result`` against the best of the modes ``against`` run so far
    (a fused mode's legs, a ``+rerank`` variant's own mode) on the first metric."""
    legs = [r for r in done if r.mode in against]
    if not legs:
        return {}
    key = next(iter(result.metrics))
    best = max(legs, key=lambda r: r.metrics[key])
    queries = sorted(result.per_query)
    a = [result.per_query[q][key] for q in queries]
    b = [best.per_query[q][key] for q in queries]
    delta = result.metrics[key] - best.metrics[key]
    return {"against": best.mode, "delta": delta, "p": randomization_test(a, b)}


# ------------------------------------------------------------------------------ the mode runners


def _legs(job: _Job, mode: str) -> tuple[str, ...]:
    legs = EVAL_MODES[mode].legs
    if any(LEG_TABLE[leg].engine_filled for leg in legs) and not job.has_bm25:
        raise _Skipped(NO_BM25)
    return legs


def _run_fuse(job: _Job, mode: str) -> tuple[Run, str]:
    """One search through HybridSearcher with the mode's ranker: one leg gives its raw scores, several
    are fused (RRF as Milvus computes it; DBSF here on every engine)."""
    return job.search(job.dataset, job.queries, _legs(job, mode), ranker=EVAL_MODES[mode].ranker), ""


def _run_weighted(job: _Job, mode: str) -> tuple[Run, str]:
    cfg = job.config
    legs = _legs(job, mode)
    weights = {"dense": cfg.w_dense, "sparse": cfg.w_sparse, "bm25": cfg.w_bm25}
    ws = [weights[leg] for leg in legs]
    top = max(ws)
    scaled = [w / top for w in ws]  # Milvus takes weights in [0, 1]; only their ratio matters
    norm = EVAL_MODES[mode].norm_score
    run = job.search(job.dataset, job.queries, legs, ranker="weighted", weights=scaled, norm_score=norm)
    return run, f"weights ({', '.join(f'{w:g}' for w in ws)})"


def _run_wrrf(job: _Job, mode: str) -> tuple[Run, str]:
    """Weighted RRF: each leg weighted by its nDCG on the tuning split (never the evaluated one)."""
    legs = _legs(job, mode)
    tune_on, cfg = job.tune_on, job.config
    if tune_on is None:
        raise _Skipped("no tuning split given (tune_on / --tune-split)")
    if tune_on.split == job.dataset.split:
        raise ConfigError("wrrf3 must tune on another split than the one evaluated")
    key = f"ndcg@{cfg.ndcg_k}"
    quality = {}
    for leg in legs:
        run = job.search(tune_on, job.tune_embeddings(), (leg,))
        quality[leg] = evaluate_run(
            run, tune_on.qrels, ndcg_k=cfg.ndcg_k, recall_k=cfg.ndcg_k, mrr_k=cfg.ndcg_k
        )[key]
    top = max(quality.values()) or 1.0
    weights = [max(quality[leg] / top, 1e-6) for leg in legs]
    run = job.search(job.dataset, job.queries, legs, ranker="rrf", weights=weights)
    shown = ", ".join(f"{leg} {w:.3f}" for leg, w in zip(legs, weights, strict=True))
    return run, f"weights {shown} (nDCG@{cfg.ndcg_k} of each leg on {tune_on.split}, scaled to max 1)"


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
    w_sparse, tuned_ndcg = _tune_sparse_weight(
        tune_on, job.candidate_sets(tune_on, job.tune_embeddings()), config
    )
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


_RUNNERS: Mapping[RunnerKind, Callable[[_Job, str], tuple[Run, str]]] = {
    "fuse": _run_fuse,
    "weighted": _run_weighted,
    "wrrf": _run_wrrf,
    "m3": _run_m3,
    "m3-tuned": _run_m3_tuned,
    "m3-all": _run_m3_all,
}
"""A mode's runner kind (``report.EVAL_MODES``) -> its function: (run, note for the report), or
``_Skipped`` with the reason."""


# ------------------------------------------------------------------------------ the collection


def encoder_fingerprint(encoder: Encoder) -> str | None:
    """What shapes the encoder's vectors: a hash of its ``config_key`` (model and settings such as max
    lengths), else its model fingerprint."""
    if isinstance(encoder, CacheKeyed):
        return "config:" + hashlib.sha256(str(encoder.config_key).encode("utf-8")).hexdigest()[:24]
    if isinstance(encoder, Fingerprinted):
        return encoder.model_fingerprint
    return None


def _eval_spec(dataset: BeirDataset, encoder: Encoder, config: EvalConfig) -> CollectionSpec:
    id_bytes = max((len(d.encode("utf-8")) for d in dataset.doc_ids), default=1)
    return CollectionSpec(
        dense_dim=encoder.dense_dim,
        model_name=encoder.model_name,
        model_fingerprint=encoder_fingerprint(encoder),
        dense_index=config.dense_index,
        id_max_length=max(64, id_bytes),
        bm25=config.bm25,
        bm25_analyzer=config.bm25_analyzer,  # type: ignore[arg-type]  # checked by CollectionSpec
        bm25_k1=config.bm25_k1,
        bm25_b=config.bm25_b,
    )


def _prepare_collection(
    manager: Any, name: str, dataset: BeirDataset, encoder: Encoder, config: EvalConfig, recreate: bool
) -> bool:
    """Create and fill the collection, or check and reuse it. Returns whether it has a BM25 field."""
    spec = _eval_spec(dataset, encoder, config)
    if manager.has_collection(name) and not recreate:
        manager.check_collection(name, spec=spec)  # model or encoder settings, BM25 analyzer, k1, b
        info = manager.describe(name)
        if info.count != len(dataset.doc_ids):
            raise ConfigError(
                f"collection {name!r} holds {info.count} rows, the dataset {len(dataset.doc_ids)} documents; "
                "pass recreate (--recreate) to rebuild it"
            )
        logger.info("reusing collection %r (%d rows)", name, info.count)
        return BM25_FIELD in info.fields
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
    """``manager.create_collection`` of ``spec`` with the BM25 leg (``CollectionSpec.bm25``) and this
    analyzer, k1 and b. Kept for scripts; new code passes ``CollectionSpec(bm25=True, ...)`` itself."""
    if manager.has_collection(name) and not recreate:
        raise CollectionExistsError(
            f"collection {name!r} already exists at {manager.uri}; pass recreate=True"
        )
    bm25_spec = replace(spec, bm25=True, bm25_analyzer=analyzer, bm25_k1=k1, bm25_b=b)  # type: ignore[arg-type]
    manager.create_collection(name, spec=bm25_spec, recreate=recreate)


# ------------------------------------------------------------------------------ helpers


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


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
