"""IR metrics as trec_eval computes them (pure stdlib): nDCG@k, Recall@k, MRR@k, ranking, run scoring.

Metrics follow trec_eval as BEIR runs it (pytrec_eval): ranking by score descending with ties broken
by document id descending; nDCG uses linear gains (``rel / log2(rank + 1)``) and the ideal ranking of
all judged documents; Recall@k counts documents with relevance > 0; every query with at least one
relevant document counts, and one with no results scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..errors import ConfigError, InputError

__all__ = [
    "Ranked",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "per_query_metrics",
    "randomization_test",
    "rank_run",
    "recall_at_k",
]

Ranked = Sequence[tuple[str, float]]
"""One query's results: (document id, score) pairs in any order."""


def rank_run(results: Ranked) -> list[str]:
    """Document ids ranked as trec_eval ranks them: score descending, then document id descending.

    A document listed twice keeps its first (highest-ranked) occurrence.
    """
    best: dict[str, float] = {}
    for did, score in results:
        did = str(did)
        if did not in best:
            best[did] = float(score)
    return [d for d, _ in sorted(best.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, ``sum rel_i / log2(i + 1)`` over ranks i = 1..k, over the ideal DCG."""
    _check_k(k)
    gains = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    if ideal == 0.0:
        return 0.0
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    return dcg / ideal


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents (relevance > 0) found in the top k."""
    _check_k(k)
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first relevant document in the top k, or 0."""
    _check_k(k)
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an int >= 1, got {k!r}")


def per_query_metrics(
    run: Mapping[str, Ranked],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_k: int = 10,
    recall_k: int = 100,
    mrr_k: int = 10,
    ignore_identical_ids: bool = False,
) -> dict[str, dict[str, float]]:
    """nDCG@ndcg_k, Recall@recall_k and MRR@mrr_k of every judged query that has a relevant document.

    ``ignore_identical_ids`` drops a document whose id equals the query id (BEIR's option for ArguAna).
    """
    names = (f"ndcg@{ndcg_k}", f"recall@{recall_k}", f"mrr@{mrr_k}")
    out: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        ranked = rank_run(run.get(qid, ()))
        if ignore_identical_ids:
            ranked = [d for d in ranked if d != qid]
        out[qid] = {
            names[0]: ndcg_at_k(ranked, rels, ndcg_k),
            names[1]: recall_at_k(ranked, rels, recall_k),
            names[2]: mrr_at_k(ranked, rels, mrr_k),
        }
    return out


def randomization_test(
    a: Sequence[float], b: Sequence[float], *, trials: int = 10_000, seed: int = 0
) -> float:
    """Two-sided paired randomization test (Smucker et al. 2007): the p-value of the mean difference
    of paired per-query scores ``a`` and ``b``, swapping each pair with probability 1/2 ``trials`` times
    (seeded, so a report is reproducible)."""
    import random

    if len(a) != len(b) or not a:
        raise InputError(
            f"randomization_test needs two equally long non-empty lists, got {len(a)} and {len(b)}"
        )
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    observed = abs(math.fsum(diffs))
    rng = random.Random(seed)
    hits = 0
    for _ in range(trials):
        total = math.fsum(d if rng.random() < 0.5 else -d for d in diffs)
        if abs(total) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (trials + 1)


def evaluate_run(
    run: Mapping[str, Ranked],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_k: int = 10,
    recall_k: int = 100,
    mrr_k: int = 10,
    ignore_identical_ids: bool = False,
) -> dict[str, float]:
    """Mean nDCG@ndcg_k, Recall@recall_k and MRR@mrr_k over the judged queries that have a relevant document.

    ``ignore_identical_ids`` drops a document whose id equals the query id (BEIR's option for ArguAna).
    """
    names = (f"ndcg@{ndcg_k}", f"recall@{recall_k}", f"mrr@{mrr_k}")
    per_query = per_query_metrics(
        run, qrels, ndcg_k=ndcg_k, recall_k=recall_k, mrr_k=mrr_k, ignore_identical_ids=ignore_identical_ids
    )
    if not per_query:
        raise InputError("no judged query has a relevant document; check the qrels file and split")
    return {k: sum(m[k] for m in per_query.values()) / len(per_query) for k in names}
