"""Retrieval-quality evaluation on BEIR-format datasets: loader, IR metrics, mode comparison, plots.

    corpus.jsonl   {"_id", "title", "text"}        one document per line
    queries.jsonl  {"_id", "text"}                 one query per line
    qrels/<split>.tsv  query-id, corpus-id, score  (tab separated, with a header line)

Metrics follow trec_eval as BEIR runs it (pytrec_eval): ranking by score descending with ties broken
by document id descending; nDCG uses linear gains (``rel / log2(rank + 1)``) and the ideal ranking of
all judged documents; Recall@k counts documents with relevance > 0; every query with at least one
relevant document counts, and one with no results scores 0.

The mode runner ingests the corpus into a Milvus collection (or reuses one), runs each mode through
Milvus and reports nDCG@10, Recall@100 and MRR@10 per mode as a table, JSON and a PNG bar chart.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError, MissingDependencyError
from .types import Encoder, M3Embeddings, SparseVector

__all__ = [
    "BeirDataset",
    "CachedEncoder",
    "EvalConfig",
    "EvalReport",
    "ModeResult",
    "add_eval_parser",
    "evaluate_run",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_run",
    "recall_at_k",
    "run_eval_cli",
    "run_evaluation",
]

logger = logging.getLogger("milvus_m3.evaluate")
logger.addHandler(logging.NullHandler())


# ============================================================================ BEIR loader


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR-format dataset, queries restricted to those judged in ``split``.

    Document texts are ``title + " " + text`` (stripped), as BEIR and MTEB feed them to encoders.
    """

    name: str
    split: str
    doc_ids: tuple[str, ...]
    doc_texts: tuple[str, ...]
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    qrels: Mapping[str, Mapping[str, int]]

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.doc_texts) or len(self.query_ids) != len(self.query_texts):
            raise InputError("BeirDataset: ids and texts must pair up")

    def __repr__(self) -> str:
        return (
            f"BeirDataset({self.name!r}, split={self.split!r}, docs={len(self.doc_ids)}, "
            f"queries={len(self.query_ids)}, judgements={sum(len(v) for v in self.qrels.values())})"
        )


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})", row=lineno) from None
            if not isinstance(obj, dict) or "_id" not in obj:
                raise InputError(f"{path}:{lineno}: each line must be a JSON object with an '_id'", field="_id", row=lineno)
            yield lineno, obj


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """``query-id -> {corpus-id: relevance}`` from a BEIR qrels TSV (header line optional)."""
    qrels: dict[str, dict[str, int]] = {}
    p = Path(path)
    with p.open("r", encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise InputError(f"{p}:{lineno}: expected query-id, corpus-id, score separated by tabs", row=lineno)
            qid, did, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                rel = int(float(score))
            except ValueError:
                if lineno == 1:  # header
                    continue
                raise InputError(f"{p}:{lineno}: score {score!r} is not a number", row=lineno) from None
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_beir(path: str | os.PathLike[str], *, split: str = "test", max_docs: int | None = None) -> BeirDataset:
    """Read a BEIR dataset folder. Only queries judged in ``qrels/<split>.tsv`` are kept.

    ``max_docs`` keeps the first documents plus every judged one (for quick runs).
    """
    root = Path(path)
    corpus_path, queries_path, qrels_path = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    for p in (corpus_path, queries_path, qrels_path):
        if not p.is_file():
            raise ConfigError(f"{p} does not exist; a BEIR dataset folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv")
    qrels = read_qrels(qrels_path)
    judged = {d for rels in qrels.values() for d in rels}
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    seen: set[str] = set()
    for lineno, obj in _read_jsonl(corpus_path):
        did = str(obj["_id"])
        if did in seen:
            raise InputError(f"{corpus_path}:{lineno}: document id {did!r} repeats", field="_id", row=lineno)
        seen.add(did)
        if max_docs is not None and len(doc_ids) >= max_docs and did not in judged:
            continue
        text = f"{obj.get('title') or ''} {obj.get('text') or ''}".strip()
        if not text:
            raise InputError(f"{corpus_path}:{lineno}: document {did!r} has no title and no text", field="text", row=lineno)
        doc_ids.append(did)
        doc_texts.append(text)
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(queries_path):
        queries[str(obj["_id"])] = str(obj.get("text") or "").strip()
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InputError(
            f"{qrels_path} judges {len(missing)} queries that {queries_path} lacks (first: {missing[0]!r})", field="query-id"
        )
    qids = [q for q in queries if q in qrels and any(r > 0 for r in qrels[q].values())]
    empty = [q for q in qids if not queries[q]]
    if empty:
        raise InputError(f"{queries_path}: query {empty[0]!r} has no text", field="text")
    return BeirDataset(
        name=root.name,
        split=split,
        doc_ids=tuple(doc_ids),
        doc_texts=tuple(doc_texts),
        query_ids=tuple(qids),
        query_texts=tuple(queries[q] for q in qids),
        qrels={q: dict(qrels[q]) for q in qids},
    )


# ============================================================================ metrics

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
    totals = dict.fromkeys(names, 0.0)
    n = 0
    for qid, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        n += 1
        ranked = rank_run(run.get(qid, ()))
        if ignore_identical_ids:
            ranked = [d for d in ranked if d != qid]
        totals[names[0]] += ndcg_at_k(ranked, rels, ndcg_k)
        totals[names[1]] += recall_at_k(ranked, rels, recall_k)
        totals[names[2]] += mrr_at_k(ranked, rels, mrr_k)
    if n == 0:
        raise InputError("no judged query has a relevant document; check the qrels file and split")
    return {k: v / n for k, v in totals.items()}


# ============================================================================ encoding cache


class CachedEncoder:
    """Wraps an ``Encoder``; encodings are stored in ``cache_dir`` as ``.npz`` files and reused.

    Texts are encoded and cached in chunks of ``chunk_size``, so an interrupted run resumes. The key of
    a chunk is a hash of the encoder's ``config_key`` (or model name), the kind (documents or queries)
    and the texts. ColBERT vectors are not cached (they are recomputed at query time).
    """

    def __init__(self, encoder: Encoder, cache_dir: str | os.PathLike[str], *, chunk_size: int = 512) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, cache_dir={str(self.cache_dir)!r})"

    @property
    def model_name(self) -> str:
        return self.encoder.model_name

    @property
    def dense_dim(self) -> int:
        return self.encoder.dense_dim

    @property
    def config_key(self) -> str:
        return str(getattr(self.encoder, "config_key", self.encoder.model_name))

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "documents", self.encoder.encode_documents)

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        return self._encode(texts, "queries", self.encoder.encode_queries)

    def _encode(self, texts: Sequence[str], kind: str, fn: Callable[[Sequence[str]], M3Embeddings]) -> M3Embeddings:
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not one string; wrap it: [text]", field="text")
        items = list(texts)
        if not items:
            return fn(items)
        parts = []
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_name.rsplit("/", 1)[-1])[:60]
        for start in range(0, len(items), self.chunk_size):
            chunk = items[start : start + self.chunk_size]
            digest = hashlib.sha256(f"{self.config_key}\x00{kind}\x00".encode())
            for t in chunk:
                digest.update(t.encode("utf-8", errors="surrogatepass"))
                digest.update(b"\x00")
            path = self.cache_dir / f"{slug}-{kind}-{digest.hexdigest()[:24]}.npz"
            if path.is_file():
                parts.append(_load_embeddings(path))
                self.hits += 1
                continue
            emb = fn(chunk)
            self.misses += 1
            _save_embeddings(path, emb)
            parts.append(emb)
            logger.info("encoded %s %d-%d of %d with %s", kind, start, start + len(chunk), len(items), self.model_name)
        return parts[0] if len(parts) == 1 else M3Embeddings.concat(parts)


def _save_embeddings(path: Path, emb: M3Embeddings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in emb.sparse], dtype=np.int64)
    indices = np.fromiter((k for s in emb.sparse for k in s), dtype=np.int64, count=int(lengths.sum()))
    values = np.fromiter((v for s in emb.sparse for v in s.values()), dtype=np.float32, count=int(lengths.sum()))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        dense=np.asarray(emb.dense, dtype=np.float32),
        sparse_lengths=lengths,
        sparse_indices=indices,
        sparse_values=values,
        truncated=np.asarray(emb.truncated, dtype=np.int64),
        token_counts=np.asarray(emb.token_counts, dtype=np.int64),
    )
    os.replace(tmp, path)


def _load_embeddings(path: Path) -> M3Embeddings:
    with np.load(path) as data:
        lengths = data["sparse_lengths"]
        indices, values = data["sparse_indices"], data["sparse_values"]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        sparse: list[SparseVector] = [
            dict(zip(indices[a:b].tolist(), values[a:b].tolist())) for a, b in zip(offsets[:-1], offsets[1:])
        ]
        return M3Embeddings(
            dense=np.array(data["dense"], dtype=np.float32),
            sparse=sparse,
            truncated=tuple(int(i) for i in data["truncated"]),
            token_counts=tuple(int(i) for i in data["token_counts"]),
        )
