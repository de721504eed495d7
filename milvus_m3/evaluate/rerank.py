"""The ``M+rerank`` variants: a mode's ranked run, its top ``cross_encoder_depth`` re-ordered by a
cross-encoder, scored like any mode.

For each mode ``M`` in ``EvalConfig.rerank_modes`` (empty: every mode run) the runner adds
``M+rerank``: each query's first ``cross_encoder_depth`` documents of M's run are scored by the
cross-encoder over (query text, document text) and sorted by that score, ties by id
(``fusion.id_order``), through ``search.rerank_stage.rerank_hits``, the stage ``HybridSearcher`` runs.
The variant's run holds those ``cross_encoder_depth`` documents only (as the search's rerank stage
pages over ``rerank_depth`` hits), so its Recall@k for k above the depth counts no document below it.
Its seconds are M's plus the reranking's. Imports neither pymilvus nor torch (the cross-encoder is
any ``types.Reranker``; ``CrossEncoderReranker`` loads only when ``EvalConfig.rerank`` names a model).
"""

from __future__ import annotations

import logging
import time

from ..errors import ConfigError
from ..search.rerank_stage import check_reranker, rerank_hits
from ..types import Hit, Reranker
from .beir import BeirDataset
from .metrics import evaluate_run, per_query_metrics
from .report import EvalConfig, ModeResult

__all__ = [
    "RERANK_SUFFIX",
    "load_cross_encoder",
    "mode_result",
    "rerank_run",
    "rerank_variant",
    "reranked_modes",
]

RERANK_SUFFIX = "+rerank"

logger = logging.getLogger("milvus_m3.evaluate")

_Run = dict[str, list[tuple[str, float]]]


def reranked_modes(config: EvalConfig) -> tuple[str, ...]:
    """The modes that get a ``+rerank`` variant: ``rerank_modes``, or every mode run (none without ``rerank``)."""
    if config.rerank is None:
        return ()
    return config.rerank_modes or config.modes


def load_cross_encoder(config: EvalConfig, cross_encoder: object | None = None) -> Reranker | None:
    """The cross-encoder of the ``+rerank`` variants: ``cross_encoder`` when given (loaded by the
    caller, e.g. on its device), else ``CrossEncoderReranker(config.rerank)``; None without ``rerank``."""
    if config.rerank is None:
        if cross_encoder is not None:
            raise ConfigError("a cross_encoder was given without EvalConfig.rerank (the model it stands for)")
        return None
    if cross_encoder is not None:
        return check_reranker(cross_encoder)
    from ..rerankers.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(config.rerank)


def rerank_run(run: _Run, dataset: BeirDataset, reranker: Reranker, depth: int) -> _Run:
    """Each query's first ``depth`` documents of ``run`` re-ordered by ``reranker`` (ties by id)."""
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts, strict=True))
    queries = dict(zip(dataset.query_ids, dataset.query_texts, strict=True))
    qids = list(run)
    firsts = [[Hit(id=doc, score=score, text=texts[doc]) for doc, score in run[q][:depth]] for q in qids]
    ranked = rerank_hits([queries[q] for q in qids], firsts, reranker, offset=0, limit=depth)
    return {q: [(str(h.id), h.score) for h in hits] for q, hits in zip(qids, ranked, strict=True)}


def mode_result(
    mode: str, run: _Run, dataset: BeirDataset, config: EvalConfig, *, seconds: float, note: str
) -> ModeResult:
    """``run`` scored per query and as means (nDCG, Recall, MRR at the config's depths)."""
    ks = (config.ndcg_k, config.recall_k, config.mrr_k)
    ignore = config.ignore_identical_ids
    return ModeResult(
        mode=mode,
        metrics=evaluate_run(
            run, dataset.qrels, ndcg_k=ks[0], recall_k=ks[1], mrr_k=ks[2], ignore_identical_ids=ignore
        ),
        seconds=seconds,
        note=note,
        seconds_per_query=seconds / max(1, len(dataset.query_ids)),
        per_query=per_query_metrics(
            run, dataset.qrels, ndcg_k=ks[0], recall_k=ks[1], mrr_k=ks[2], ignore_identical_ids=ignore
        ),
        run=run,
    )


def rerank_variant(
    base: ModeResult, dataset: BeirDataset, config: EvalConfig, reranker: Reranker
) -> ModeResult:
    """``base.mode + "+rerank"``: its run's top ``cross_encoder_depth`` reranked and scored."""
    started = time.perf_counter()
    run = rerank_run(dict(base.run), dataset, reranker, config.cross_encoder_depth)
    seconds = base.seconds + time.perf_counter() - started
    note = f"top {config.cross_encoder_depth} of {base.mode} reordered by cross-encoder {reranker.model_name}"
    result = mode_result(base.mode + RERANK_SUFFIX, run, dataset, config, seconds=seconds, note=note)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    logger.info("%s: %s (%.1f s)", result.mode, shown, seconds)
    return result
