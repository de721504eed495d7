"""The ``milvus-m3`` argument parser: options, their defaults and choices (taken from the dataclasses
they fill, so the CLI and the Python API cannot drift apart). Building it imports nothing heavy.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..collection.legs import LEG_TABLE
from ..collection.schema import CollectionSpec
from ..embedder.checkpoint import DEFAULT_MODEL, MODEL_ENV
from ..engine.capabilities import SERVER_SPARSE_INDEX_ALGOS
from ..fusion import RRF_K
from ..ingest.options import ON_ERROR, IngestOptions
from ..ingest.readers import FORMATS
from ..search.options import DEFAULT_MODE, DEFAULT_RANKER, MAX_RRF_K, MODES, RANKERS, SearchOptions
from ..search.rankers import REGISTRY
from ..search.rerank_stage import DEFAULT_RERANK_DEPTH
from ._messages import EPILOG, EXIT_REJECTED, OneLineParser
from .eval import add_eval_parser

__all__ = [
    "DEFAULT_URI",
    "EPILOG",
    "EXIT_REJECTED",
    "TOKEN_ENV",
    "URI_ENV",
    "add_connection_arguments",
    "build_parser",
    "choices",
    "connection_options",
    "default",
    "from_args",
]

if TYPE_CHECKING:
    pass
from ._argtypes import (
    choices,
    default,
    env_arg,
    field_list_arg,
    from_args,
    languages_arg,
    legs_arg,
    non_negative_arg,
    positive_arg,
    weights_arg,
)
from ._connection_args import (
    DEFAULT_URI,
    TOKEN_ENV,
    URI_ENV,
    add_connection_arguments,
    connection_options,
)
from ._ray_args import add_ray_arguments


def _spec_option(name: str) -> Any:
    return default(CollectionSpec, name)


def _add_sparse_size(p: argparse.ArgumentParser) -> None:
    """The learned-sparse size options of a new collection (CollectionSpec; kept in its build record)."""
    p.add_argument(
        "--sparse-top-k",
        type=positive_arg,
        default=_spec_option("sparse_top_k"),
        help="keep the K largest sparse weights per text, and per query at search time (default: all)",
    )
    p.add_argument(
        "--sparse-mass",
        type=float,
        default=_spec_option("sparse_mass"),
        help="keep the largest sparse weights covering this share (0, 1] of each vector (default: all)",
    )
    p.add_argument(
        "--sparse-inverted-index-algo",
        choices=SERVER_SPARSE_INDEX_ALGOS,
        default=_spec_option("sparse_inverted_index_algo"),
        help="the sparse index's algorithm on a Milvus server >= 2.5 (default: the server's)",
    )


def _ingest_option(name: str) -> Any:
    return default(IngestOptions, name)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (stdlib only: building it imports nothing heavy)."""
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common)
    # SUPPRESS: a -v given before the command (on the main parser) is not reset by the subcommand.
    verbose_help = "log what happens (INFO) on stderr; also before the command"
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)

    model = argparse.ArgumentParser(add_help=False)
    grp = model.add_argument_group("model")
    grp.add_argument(
        "--model",
        default=env_arg(MODEL_ENV, DEFAULT_MODEL),
        help=f"BGE-M3 checkpoint directory or hub id (default: ${MODEL_ENV} or {DEFAULT_MODEL})",
    )
    grp.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 when available, else cpu)"
    )
    grp.add_argument(
        "--threads",
        type=positive_arg,
        default=None,
        help="torch CPU threads (default: $OMP_NUM_THREADS, else the CPUs this process may use; "
        "1 is fastest on a busy shared machine)",
    )
    grp.add_argument(
        "--max-length",
        type=positive_arg,
        default=None,
        help="most tokens per text (documents for ingest, queries for search)",
    )

    parser = OneLineParser(
        prog="milvus-m3",
        description="Hybrid dense + learned-sparse retrieval for Milvus with BGE-M3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"milvus-m3 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_create(sub, [common, model])
    _add_ingest(sub, [common, model])
    _add_search(sub, [common, model])
    # eval: options in cli/eval.py; the evaluation modules load inside the command
    add_eval_parser(sub, parents=[common, model])
    _add_info(sub, [common])
    _add_drop(sub, [common])
    return parser


def _add_create(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """create: options and defaults from CollectionSpec."""
    p = sub.add_parser(
        "create",
        parents=parents,
        help="create a collection for BGE-M3 vectors",
        description="Create a collection. The dense dim comes from --dense-dim, else the "
        "checkpoint's config.json (the model is not loaded).",
    )
    p.add_argument("--collection", required=True)
    p.add_argument(
        "--dense-dim", type=positive_arg, default=None, help="dense vector size (default: from the model)"
    )
    p.add_argument(
        "--chunked", action="store_true", help="add parent_id and chunk_index (for ingest --chunk-tokens)"
    )
    spec = _spec_option
    p.add_argument(
        "--dense-index",
        default=spec("dense_index"),
        help="auto (HNSW on a server, AUTOINDEX on Lite), HNSW, FLAT, ...",
    )
    p.add_argument("--hnsw-m", type=positive_arg, default=spec("hnsw_m"))
    p.add_argument("--hnsw-ef-construction", type=positive_arg, default=spec("hnsw_ef_construction"))
    p.add_argument("--ivf-nlist", type=positive_arg, default=spec("ivf_nlist"))
    p.add_argument(
        "--sparse-index", choices=choices(CollectionSpec, "sparse_index"), default=spec("sparse_index")
    )
    p.add_argument("--sparse-drop-ratio-build", type=float, default=spec("sparse_drop_ratio_build"))
    _add_sparse_size(p)
    p.add_argument("--id-type", choices=choices(CollectionSpec, "id_type"), default=spec("id_type"))
    p.add_argument(
        "--text-max-length",
        type=positive_arg,
        default=spec("text_max_length"),
        help="bytes of text stored per row",
    )
    p.add_argument(
        "--consistency-level",
        choices=choices(CollectionSpec, "consistency_level"),
        default=spec("consistency_level"),
    )
    p.add_argument(
        "--partition-key",
        default=spec("partition_key"),
        metavar="FIELD",
        help="a tenant field every row carries (the partition key on a server); search with --tenant",
    )
    p.add_argument("--num-partitions", type=positive_arg, default=spec("num_partitions"))
    p.add_argument(
        "--bm25", action="store_true", help="add Milvus's BM25 leg (filled by the engine from the text)"
    )
    p.add_argument(
        "--bm25-analyzer",
        choices=choices(CollectionSpec, "bm25_analyzer"),
        default=spec("bm25_analyzer"),
        help="english; chinese for Chinese; standard for Arabic and other spaced scripts; icu (jieba on "
        "Milvus Lite) for Thai (default %(default)s)",
    )
    p.add_argument(
        "--bm25-languages",
        type=languages_arg,
        default=spec("bm25_languages"),
        metavar="CODE=ANALYZER,..",
        help="one analyzer per language, picked per row by --bm25-language-field, e.g. "
        "en=english,zh=chinese,default=standard (Milvus servers >= 2.5.11; refused on Milvus Lite)",
    )
    p.add_argument(
        "--bm25-language-field",
        default=spec("bm25_language_field"),
        metavar="FIELD",
        help="the field naming each row's language, with --bm25-languages (default %(default)s)",
    )
    p.add_argument("--bm25-k1", type=float, default=spec("bm25_k1"))
    p.add_argument("--bm25-b", type=float, default=spec("bm25_b"))
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--exists-ok", action="store_true", help="keep an existing collection (checked against the spec)"
    )
    how.add_argument(
        "--recreate", action="store_true", help="drop an existing collection first (its data is lost)"
    )
    p.add_argument("--json", action="store_true", help="print the collection's description as JSON")


def _add_ingest(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """ingest: options and defaults from IngestOptions."""
    p = sub.add_parser(
        "ingest",
        parents=parents,
        help="embed files and upsert them into a collection",
        description="Stream JSONL, CSV, TSV, Parquet or BEIR corpus files ('-' for stdin, gzip "
        "recognised) into a collection: resumable, idempotent (upserts by id), bad rows reported. "
        "A missing collection is created (chunked when --chunk-tokens is given).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input files; '-' reads stdin")
    p.add_argument("--collection", required=True)
    _add_sparse_size(p)
    opt = _ingest_option
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=opt("format"),
        help="input format (default: from the name, then the first bytes; corpus.jsonl is BEIR)",
    )
    ids = p.add_mutually_exclusive_group()
    ids.add_argument(
        "--id-field",
        default=opt("id_field"),
        help="id column (default: 'id' or '_id' when the file has one, else content hashes)",
    )
    ids.add_argument("--hash-ids", action="store_true", help="ids are blake2b hashes of the text, always")
    p.add_argument("--text-field", default=opt("text_field"))
    p.add_argument(
        "--title-field",
        default=opt("title_field"),
        help="embedded as '<title> <text>' and kept in the metadata",
    )
    p.add_argument(
        "--metadata-fields",
        type=field_list_arg,
        default=list(opt("metadata_fields")),
        help="comma-separated fields kept as metadata",
    )
    p.add_argument(
        "--batch-size",
        type=positive_arg,
        default=opt("batch_size"),
        help=f"records per batch (default {opt('batch_size')})",
    )
    p.add_argument(
        "--resume", action="store_true", help="skip what the interrupted run with these options wrote"
    )
    p.add_argument(
        "--force-resume",
        action="store_true",
        help="with --resume: resume even though an input changed since the checkpoint (lines only appended)",
    )
    p.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default=opt("on_error"),
        help="skip: report bad rows and go on; fail: stop before writing the batch holding one",
    )
    p.add_argument(
        "--errors",
        default=None,
        metavar="PATH",
        help="bad rows as JSON lines (default: next to the state file, *.ingest-errors.jsonl)",
    )
    p.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="checkpoint file (default: next to a Lite .db file, <db>.<collection>.ingest-state.json; for a "
        "server, ./<collection>.<hash of server and inputs>.ingest-state.json)",
    )
    p.add_argument(
        "--chunk-tokens",
        type=positive_arg,
        default=opt("chunk_tokens"),
        help="split documents into chunks of N tokens",
    )
    p.add_argument(
        "--chunk-overlap",
        type=non_negative_arg,
        default=opt("chunk_overlap"),
        help="tokens shared by consecutive chunks",
    )
    p.add_argument(
        "--truncate",
        action="store_true",
        help="embed texts beyond the max length cut to it (default: they are bad rows)",
    )
    p.add_argument(
        "--tenant-field",
        default=opt("tenant_field"),
        metavar="FIELD",
        help="record field holding each record's tenant (a missing collection gets a tenant field)",
    )
    p.add_argument("--encode-batch-size", type=positive_arg, default=16, help="texts per model forward pass")
    p.add_argument(
        "--max-batch-tokens",
        type=positive_arg,
        default=None,
        help="padded tokens per forward pass as well (bounds GPU memory for long documents)",
    )
    p.add_argument(
        "--strict-exit",
        action="store_true",
        help=f"exit {EXIT_REJECTED} (not 0) when the job finished but rejected rows (--on-error skip)",
    )
    add_ray_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no notes")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _add_search(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """search: options and defaults from search.options."""
    p = sub.add_parser(
        "search",
        parents=parents,
        help="search a collection",
        description="Hybrid (dense + sparse, fused), dense or sparse search.",
    )
    p.add_argument("query")
    p.add_argument("--collection", required=True)
    p.add_argument("--limit", type=positive_arg, default=default(SearchOptions, "limit"))
    p.add_argument("--offset", type=non_negative_arg, default=default(SearchOptions, "offset"))
    p.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="hybrid: RRF or weighted fusion of dense and sparse; m3: dense + 0.3 x sparse raw scores "
        "over both candidate lists; m3-all: m3 re-ranked with ColBERT (default %(default)s)",
    )
    p.add_argument(
        "--ranker",
        choices=RANKERS,
        default=DEFAULT_RANKER,
        help="how hybrid mode fuses: "
        + "; ".join(f"{s.name}: {s.help}" for s in REGISTRY.values())
        + f" (default {DEFAULT_RANKER})",
    )
    p.add_argument(
        "--legs",
        type=legs_arg,
        default=None,
        metavar="LEGS",
        help="legs to fuse, comma-separated, from: "
        + "; ".join(f"{name}: {leg.help}" for name, leg in LEG_TABLE.items())
        + " (default: all the collection has)",
    )
    p.add_argument(
        "--weights",
        type=weights_arg,
        default=None,
        metavar="W,W,..",
        help="one per leg, in [0, 1] for rrf and weighted, >= 0 for dbsf (default 1 each)",
    )
    p.add_argument(
        "--rrf-k", type=int, default=RRF_K, help=f"RRF k, an int in 1..{MAX_RRF_K - 1} (default %(default)s)"
    )
    p.add_argument(
        "--candidates",
        type=positive_arg,
        default=None,
        help="candidates per leg (default 100, benchmarks/results/candidates.txt)",
    )
    p.add_argument(
        "--raw-scores",
        action="store_true",
        help="weighted ranker: sum raw scores instead of Milvus's [0, 1]-mapped ones",
    )
    p.add_argument(
        "--filter",
        default=None,
        metavar="EXPR",
        help='Milvus boolean expression on stored fields, e.g. \'id in ["a", "b"]\'; keys from ingest '
        '--metadata-fields are in the JSON field metadata: \'metadata["topic"] == "biology"\'',
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="FIELD",
        help="one hit per value of FIELD (parent_id: one hit per document in a chunked collection)",
    )
    p.add_argument(
        "--tenant", default=None, help="only this tenant's rows (a collection with a tenant field)"
    )
    p.add_argument(
        "--language",
        default=default(SearchOptions, "language"),
        metavar="CODE",
        help="the query's language for the bm25 leg (a code of the collection's --bm25-languages)",
    )
    p.add_argument(
        "--rerank",
        default=None,
        metavar="MODEL",
        help="rerank with this cross-encoder (a directory or hub id, e.g. BAAI/bge-reranker-v2-m3)",
    )
    p.add_argument(
        "--rerank-depth",
        type=positive_arg,
        default=None,
        help=f"first-stage hits the cross-encoder reorders (with --rerank; default {DEFAULT_RERANK_DEPTH})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per hit: id, score, text, metadata")


def _add_info(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """info: count, schema and model of a collection, or the list of them."""
    p = sub.add_parser("info", parents=parents, help="count, schema and model of a collection (or list them)")
    p.add_argument("--collection", default=None, help="the collection (default: list all with their counts)")
    p.add_argument("--json", action="store_true")


def _add_drop(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """drop: a collection and its data."""
    p = sub.add_parser("drop", parents=parents, help="drop a collection and its data")
    p.add_argument("--collection", required=True)
    p.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
