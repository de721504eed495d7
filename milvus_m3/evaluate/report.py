"""What an evaluation run is and what it gives: the modes, ``EvalConfig``, ``ModeResult``, ``EvalReport``
(markdown table, JSON, and a PNG bar chart with matplotlib imported when plotting)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..fusion import M3_COLBERT_WEIGHT, M3_DENSE_WEIGHT, M3_SPARSE_WEIGHT, RRF_K
from ..search.options import check_rrf_k
from ..search.rerank_stage import DEFAULT_RERANK_DEPTH

if TYPE_CHECKING:
    from ..search.rerank import M3Weights

__all__ = [
    "ALL_MODES",
    "DEFAULT_TUNE_GRID",
    "EVAL_MODES",
    "FUSED_LEGS",
    "MODE_HELP",
    "SINGLE_MODES",
    "EvalConfig",
    "EvalMode",
    "EvalReport",
    "ModeResult",
    "RunnerKind",
]

RunnerKind = Literal["fuse", "weighted", "wrrf", "m3", "m3-tuned", "m3-all"]
"""How a mode is run (``runner.py`` keeps one function per kind): ``fuse`` one search through
``HybridSearcher`` with the mode's ranker (one leg: its raw scores); ``weighted`` the weighted ranker with
the config's leg weights; ``wrrf`` weighted RRF tuned on another split; ``m3`` / ``m3-tuned`` / ``m3-all``
BGE-M3's raw-score fusion (``search.rerank``)."""


@dataclass(frozen=True, kw_only=True)
class EvalMode:
    """One evaluation mode: the legs it reads, how it runs, its ranker, its line in ``--help``."""

    legs: tuple[str, ...]
    runner: RunnerKind
    help: str
    ranker: str | None = None
    """The searcher's ranker (``search.rankers``) for the ``fuse`` kind."""
    norm_score: bool = True
    """``weighted`` kind: map each leg's scores into [0, 1] first (Milvus's default) or sum raw scores."""


_DS, _DSB = ("dense", "sparse"), ("dense", "sparse", "bm25")

EVAL_MODES: Mapping[str, EvalMode] = {
    "dense": EvalMode(legs=("dense",), runner="fuse", ranker="rrf", help="dense ANN (inner product)"),
    "sparse": EvalMode(
        legs=("sparse",), runner="fuse", ranker="rrf", help="learned-sparse ANN (inner product)"
    ),
    "bm25": EvalMode(
        legs=("bm25",),
        runner="fuse",
        ranker="rrf",
        help="Milvus's built-in BM25 function over the stored text",
    ),
    "rrf": EvalMode(legs=_DS, runner="fuse", ranker="rrf", help=f"dense + sparse, RRF (k={RRF_K})"),
    "weighted": EvalMode(
        legs=_DS,
        runner="weighted",
        help="dense + sparse, Milvus's WeightedRanker (w_dense, w_sparse; scores mapped by arctan)",
    ),
    "rrf3": EvalMode(
        legs=_DSB,
        runner="fuse",
        ranker="rrf",
        help=f"dense + sparse + BM25, RRF (k={RRF_K}): the default search of a BM25 collection",
    ),
    "m3": EvalMode(
        legs=_DS,
        runner="m3",
        help="raw-score fusion w_dense*dense + w_sparse*sparse over the union of both lists (exact fill-in)",
    ),
    "m3-tuned": EvalMode(
        legs=_DS,
        runner="m3-tuned",
        help="m3 with w_sparse chosen on the tuning split (never on the evaluated split)",
    ),
    "m3-all": EvalMode(legs=_DS, runner="m3-all", help="m3 candidates re-ranked with + w_colbert*colbert"),
    "rrf-dense-bm25": EvalMode(
        legs=("dense", "bm25"), runner="fuse", ranker="rrf", help=f"dense + BM25, RRF (k={RRF_K})"
    ),
    "rrf-sparse-bm25": EvalMode(
        legs=("sparse", "bm25"), runner="fuse", ranker="rrf", help=f"sparse + BM25, RRF (k={RRF_K})"
    ),
    "wrrf3": EvalMode(
        legs=_DSB,
        runner="wrrf",
        help="dense + sparse + BM25, weighted RRF, each leg's weight its nDCG@10 on the tuning split",
    ),
    "weighted-raw": EvalMode(
        legs=_DS,
        runner="weighted",
        norm_score=False,
        help="dense + sparse, raw weighted sum w_dense*dense + w_sparse*sparse over both lists",
    ),
    "weighted3": EvalMode(
        legs=_DSB,
        runner="weighted",
        help="dense + sparse + BM25, Milvus's weighted sum of mapped scores (w_dense, w_sparse, w_bm25)",
    ),
    "dbsf": EvalMode(
        legs=_DS,
        runner="fuse",
        ranker="dbsf",
        help="dense + sparse, distribution-based score fusion (each leg scaled by its mean -+ 3 sd, summed)",
    ),
    "dbsf3": EvalMode(
        legs=_DSB, runner="fuse", ranker="dbsf", help="dense + sparse + BM25, distribution-based score fusion"
    ),
    "dbsf-dense-bm25": EvalMode(
        legs=("dense", "bm25"),
        runner="fuse",
        ranker="dbsf",
        help="dense + BM25, distribution-based score fusion",
    ),
    "dbsf-sparse-bm25": EvalMode(
        legs=("sparse", "bm25"),
        runner="fuse",
        ranker="dbsf",
        help="sparse + BM25, distribution-based score fusion",
    ),
}
"""Every evaluation mode, in report order: a new mode of an existing kind is one entry here."""

ALL_MODES = tuple(EVAL_MODES)
SINGLE_MODES = tuple(name for name, mode in EVAL_MODES.items() if len(mode.legs) == 1)
FUSED_LEGS: Mapping[str, tuple[str, ...]] = {
    name: mode.legs for name, mode in EVAL_MODES.items() if name not in SINGLE_MODES
}
"""The legs each fused mode combines: its significance test is against the best of them."""
MODE_HELP = {name: mode.help for name, mode in EVAL_MODES.items()}

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
    rrf_k: int = RRF_K
    w_dense: float = M3_DENSE_WEIGHT
    w_sparse: float = M3_SPARSE_WEIGHT
    w_colbert: float = M3_COLBERT_WEIGHT
    ndcg_k: int = 10
    recall_k: int = 100
    mrr_k: int = 10
    bm25: bool = True
    bm25_analyzer: str = "english"
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    w_bm25: float = 1.0
    """The BM25 leg's weight in ``weighted3``."""
    dense_index: str = "FLAT"
    rerank_depth: int | None = 100
    search_batch: int = 64
    write_batch: int = 256
    ignore_identical_ids: bool = False
    tune_grid: tuple[float, ...] = DEFAULT_TUNE_GRID
    rerank: str | None = None
    """A cross-encoder (directory or hub id): modes of ``rerank_modes`` also run as ``M+rerank``."""
    rerank_modes: tuple[str, ...] = ()
    """The modes given a ``+rerank`` variant (each one of ``modes``); empty: every mode run."""
    cross_encoder_depth: int = DEFAULT_RERANK_DEPTH
    """Documents of each run the cross-encoder reorders (``evaluate.rerank``)."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in ALL_MODES]
        if unknown or not self.modes:
            raise ConfigError(f"unknown modes {unknown}; choose from {', '.join(ALL_MODES)}")
        check_rrf_k(self.rrf_k)
        for name in (
            "limit",
            "candidates",
            "ndcg_k",
            "recall_k",
            "mrr_k",
            "search_batch",
            "write_batch",
            "cross_encoder_depth",
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
        self._check_rerank()
        if not self.tune_grid or any(not math.isfinite(w) or w < 0 for w in self.tune_grid):
            raise ConfigError("tune_grid must hold finite weights >= 0")
        self.weights()  # validates the weights

    def _check_rerank(self) -> None:
        if self.rerank is not None and (not isinstance(self.rerank, str) or not self.rerank.strip()):
            raise ConfigError(f"EvalConfig.rerank must be a model directory or hub id, got {self.rerank!r}")
        if self.rerank_modes and self.rerank is None:
            raise ConfigError("EvalConfig.rerank_modes needs rerank (the cross-encoder model)")
        stray = [m for m in self.rerank_modes if m not in self.modes]
        if stray:
            raise ConfigError(f"rerank_modes {stray} are not among the modes run ({', '.join(self.modes)})")
        if self.rerank is not None and self.cross_encoder_depth > self.limit:
            raise ConfigError(f"cross_encoder_depth {self.cross_encoder_depth} is above limit {self.limit}")

    def weights(self) -> M3Weights:
        from ..search.rerank import M3Weights

        return M3Weights(dense=self.w_dense, sparse=self.w_sparse, colbert=self.w_colbert)


@dataclass(frozen=True)
class ModeResult:
    mode: str
    metrics: Mapping[str, float]
    seconds: float
    note: str = ""
    seconds_per_query: float = 0.0
    significance: Mapping[str, Any] = field(default_factory=dict)
    """Against the best of its legs: {"against", "delta", "p"} (paired randomization test, nDCG)."""
    per_query: Mapping[str, Mapping[str, float]] = field(default_factory=dict, repr=False, compare=False)
    run: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


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
        data["results"] = [
            {k: v for k, v in asdict(r).items() if k not in ("per_query", "run")} for r in self.results
        ]
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
        header = "| mode | " + " | ".join(_pretty(n) for n in names) + " | seconds | ms/query | what |"
        lines += [header, "|" + "---|" * (len(names) + 4)]
        for r in self.results:
            cells = " | ".join(f"{r.metrics[n]:.4f}" for n in names)
            what = MODE_HELP.get(r.mode, "") + (f"; {r.note}" if r.note else "")
            lines.append(
                f"| {r.mode} | {cells} | {r.seconds:.1f} | {1000 * r.seconds_per_query:.1f} | {what} |"
            )
        lines += self._comparison()
        lines += self._significance()
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
            dense_sparse = [r for r in fused if "bm25" not in FUSED_LEGS.get(r.mode, ())]
            groups.insert(0, ("Best of dense and sparse", two_way, dense_sparse))
        out: list[str] = []
        for label, pool, modes in groups:
            best = max(pool, key=lambda r: r.metrics[key])
            gaps = [(r.mode, r.metrics[key] - best.metrics[key]) for r in modes]
            above = ", ".join(f"{m} ({g:+.4f})" for m, g in gaps if g > 0) or "none"
            below = ", ".join(f"{m} ({g:+.4f})" for m, g in gaps if g <= 0) or "none"
            summary = f"{label} on {_pretty(key)}: {best.mode} {best.metrics[key]:.4f}. "
            out += ["", summary + f"Fused modes above it: {above}; not above it: {below}."]
        return out

    def _significance(self) -> list[str]:
        rows = [r for r in self.results if r.significance]
        if not rows:
            return []
        key = _pretty(self.metric_names()[0])
        out = ["", f"Paired randomization test on per-query {key} (10,000 trials, two-sided), each fused mode "
               "against the best of its own legs:", "", "| mode | best leg | difference | p |", "|---|---|---|---|"]  # fmt: skip
        for r in rows:
            sig = r.significance
            out.append(f"| {r.mode} | {sig['against']} | {sig['delta']:+.4f} | {sig['p']:.4f} |")
        return out

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """A PNG that answers "which mode should I use": the modes sorted by the first metric (nDCG@10)
        on an axis zoomed to their spread, each labelled with its gain over the best single leg,
        published baselines of the dataset marked, and the time per query beside it."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingDependencyError(
                "the bar chart needs matplotlib; pip install 'milvus-m3[plot]'"
            ) from exc
        fig, (ax, lat) = plt.subplots(
            1,
            2,
            figsize=(10.0, 1.2 + 0.42 * max(len(self.results), 1)),
            dpi=120,
            gridspec_kw={"width_ratios": (3.2, 1.0)},
            sharey=True,
        )
        try:
            if self.results:
                _draw_quality(ax, self)
                _draw_latency(lat, self)
            fig.suptitle(
                f"{self.dataset} ({self.split}, {self.n_queries} queries, {self.n_docs:,} docs): "
                f"{self.encoder}",
                fontsize=9,
            )
            fig.tight_layout()
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out)
        finally:
            plt.close(fig)
        return out

    def save(
        self, out_dir: str | os.PathLike[str], stem: str, *, plot: bool = True, runs: bool = False
    ) -> list[Path]:
        """Write ``<stem>.md``, ``<stem>.json`` and (with matplotlib) ``<stem>.png`` into ``out_dir``;
        with ``runs``, also ``<stem>.runs/<mode>.trec`` (TREC run files) and ``<stem>.per_query.tsv``."""
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{stem}.md", folder / f"{stem}.json"]
        paths[0].write_text(self.to_markdown(), encoding="utf-8")
        paths[1].write_text(self.to_json(), encoding="utf-8")
        if plot:
            paths.append(self.plot(folder / f"{stem}.png"))
        if runs:
            paths += self._save_runs(folder, stem)
        return paths

    def _save_runs(self, folder: Path, stem: str) -> list[Path]:
        run_dir = folder / f"{stem}.runs"
        run_dir.mkdir(exist_ok=True)
        paths: list[Path] = []
        for r in self.results:
            lines = [
                f"{qid} Q0 {doc} {rank} {score:.6f} {r.mode}"
                for qid, hits in r.run.items()
                for rank, (doc, score) in enumerate(hits, 1)
            ]
            path = run_dir / f"{r.mode}.trec"
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            paths.append(path)
        names = self.metric_names()
        rows = ["mode\tquery\t" + "\t".join(names)]
        for r in self.results:
            rows += [
                f"{r.mode}\t{q}\t" + "\t".join(f"{m[n]:.6f}" for n in names) for q, m in r.per_query.items()
            ]
        tsv = folder / f"{stem}.per_query.tsv"
        tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return [*paths, tsv]


PUBLISHED_BASELINES: Mapping[str, Mapping[str, float]] = {
    "scifact": {"BM25 (BEIR)": 0.665, "all-MiniLM-L6-v2": 0.645},
}
"""Published nDCG@10 of common baselines, by dataset name (BEIR's BM25; sentence-transformers' MiniLM)."""

_SINGLE_COLOUR, _FUSED_COLOUR, _BEST_COLOUR = "#9aa5b1", "#4c78a8", "#f58518"


def _baselines(report: EvalReport) -> Mapping[str, float]:
    names = report.metric_names()
    if not names or not names[0].startswith("ndcg@10"):
        return {}
    return PUBLISHED_BASELINES.get(report.dataset.lower().rsplit("/", 1)[-1], {})


def _ordered(report: EvalReport) -> list[ModeResult]:
    """The results by the first metric, best first."""
    key = report.metric_names()[0]
    return sorted(report.results, key=lambda r: r.metrics[key], reverse=True)


def _draw_quality(ax: Any, report: EvalReport) -> None:
    key = report.metric_names()[0]
    rows = _ordered(report)
    singles = [r for r in rows if r.mode in SINGLE_MODES]
    best_single = max(singles, key=lambda r: r.metrics[key]) if singles else None
    vals = [r.metrics[key] for r in rows]
    y = np.arange(len(rows))
    colours = [
        _BEST_COLOUR if i == 0 else _SINGLE_COLOUR if r.mode in SINGLE_MODES else _FUSED_COLOUR
        for i, r in enumerate(rows)
    ]
    ax.barh(y, vals, color=colours, height=0.7)
    marks = dict(_baselines(report))
    lo = min([*vals, *marks.values()])
    hi = max([*vals, *marks.values()])
    span = max(hi - lo, 0.02)
    ax.set_xlim(max(0.0, lo - 0.35 * span), min(1.0, hi + 0.75 * span) if hi < 1 else hi + 0.75 * span)
    for i, r in enumerate(rows):
        label = f"{r.metrics[key]:.3f}"
        if best_single is not None and r is not best_single:
            label += f"  ({r.metrics[key] - best_single.metrics[key]:+.3f} vs {best_single.mode})"
        elif best_single is not None:
            label += "  (best single leg)"
        ax.text(r.metrics[key] + 0.01 * span, i, label, va="center", fontsize=7)
    if best_single is not None:
        ax.axvline(best_single.metrics[key], color=_SINGLE_COLOUR, linestyle="--", linewidth=1)
    for j, (name, value) in enumerate(sorted(marks.items(), key=lambda kv: -kv[1])):
        ax.axvline(value, color="#b22222", linestyle=":", linewidth=1.2)
        ax.text(
            value,
            len(rows) - 0.35 + 0.45 * j,
            f"{name} {value:.3f} (published)",
            color="#b22222",
            fontsize=7,
            ha="center",
            va="bottom",
        )
    ax.set_ylim(len(rows) - 0.5 + 0.5 * len(marks) + 0.2, -0.6)
    ax.set_yticks(y, [r.mode for r in rows], fontsize=8)
    ax.set_xlabel(f"{_pretty(key)} (axis zoomed; grey: single legs, blue: fused, orange: best)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def _draw_latency(ax: Any, report: EvalReport) -> None:
    rows = _ordered(report)
    per_query = [1000.0 * r.seconds / max(report.n_queries, 1) for r in rows]
    ax.barh(np.arange(len(rows)), per_query, color="#72b7b2", height=0.7)
    for i, ms in enumerate(per_query):
        ax.text(ms, i, f" {ms:.1f}", va="center", fontsize=7)
    ax.set_xlim(0, max(per_query, default=1.0) * 1.35 or 1.0)
    ax.set_xlabel("ms per query (search + fusion)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def _pretty(name: str) -> str:
    base, _, k = name.partition("@")
    return {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR"}.get(base, base) + (f"@{k}" if k else "")
