"""Retrieval-quality evaluation on BEIR-format datasets: loader, IR metrics, encoding cache, mode runner, report.

    beir.py     BeirDataset, load_beir, read_qrels (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
    metrics.py  nDCG@k, Recall@k, MRR@k as trec_eval computes them; evaluate_run scores a run
    cache.py    CachedEncoder: encodings stored as .npz files and reused
    report.py   the modes, EvalConfig, ModeResult, EvalReport (markdown, JSON, PNG bar chart)
    runner.py   run_evaluation: fill or reuse the collection, run each mode through Milvus, score it
    rerank.py   the M+rerank variants: a mode's top hits reordered by a cross-encoder, scored alike

The ``eval`` command (the part that prints) lives in ``milvus_m3.cli.eval``.
"""

from __future__ import annotations

from .beir import BeirDataset, load_beir, read_qrels
from .cache import CachedEncoder
from .metrics import evaluate_run, mrr_at_k, ndcg_at_k, rank_run, recall_at_k
from .report import ALL_MODES, EvalConfig, EvalReport, ModeResult
from .runner import BM25_FIELD, create_bm25_collection, run_evaluation

__all__ = [
    "ALL_MODES",
    "BM25_FIELD",
    "BeirDataset",
    "CachedEncoder",
    "EvalConfig",
    "EvalReport",
    "ModeResult",
    "create_bm25_collection",
    "evaluate_run",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_run",
    "read_qrels",
    "recall_at_k",
    "run_evaluation",
]
