"""``milvus-m3``: a thin command line over the Python API.

    milvus-m3 create  --collection NAME [--uri URI] [--model M] [index options]
    milvus-m3 ingest  FILE... --collection NAME [--id-field id] [--text-field text] [--title-field title]
                      [--metadata-fields a,b] [--batch-size N] [--resume] [--on-error skip|fail] ...
    milvus-m3 search  "query" --collection NAME [--limit 10] [--mode hybrid|dense|sparse] [--filter EXPR] [--json]
    milvus-m3 info    [--collection NAME] [--json]
    milvus-m3 drop    --collection NAME [--yes]

``--uri``, ``--token`` and ``--model`` default to ``$MILVUS_URI`` (else ``./milvus_m3.db``, Milvus Lite),
``$MILVUS_TOKEN`` and ``$MILVUS_M3_MODEL`` (else ``BAAI/bge-m3``). Each command imports its heavy parts
(pymilvus, torch, FlagEmbedding) when it runs: ``--help``, ``info`` and ``drop`` never load torch, and
``create`` reads the dense dim from the checkpoint's ``config.json`` instead of loading the model.

Exit codes: 0 done; 1 a failure (Milvus, model, collection); 2 a usage or input error (bad option,
bad file, a bad row with ``--on-error fail``); 130 interrupted. Errors are one line on stderr, without
a traceback and without the token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import ConfigError, InputError, MilvusM3Error

if TYPE_CHECKING:
    from ..collection import CollectionManager
    from ..embedder import M3Embedder

__all__ = ["build_parser", "main"]

DEFAULT_URI = "./milvus_m3.db"
DEFAULT_MODEL = "BAAI/bge-m3"
URI_ENV = "MILVUS_URI"
TOKEN_ENV = "MILVUS_TOKEN"
MODEL_ENV = "MILVUS_M3_MODEL"
KNOWN_DENSE_DIMS = {"BAAI/bge-m3": 1024}
"""Dense dims of hub models, so ``create`` needs neither the model nor the network for them."""

logger = logging.getLogger("milvus_m3.cli")


# ------------------------------------------------------------------------------------------ the parser


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0")
    return value


def _field_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give field names separated by commas, e.g. lang,topic")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (stdlib only: building it imports nothing heavy)."""
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--uri", default=_env(URI_ENV, DEFAULT_URI),
        help=f"Milvus Lite file (*.db) or server URI (default: ${URI_ENV} or {DEFAULT_URI})",
    )
    conn.add_argument("--token", default=_env(TOKEN_ENV), help=f"server token, user:password (default: ${TOKEN_ENV})")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO) on stderr")

    model = argparse.ArgumentParser(add_help=False)
    grp = model.add_argument_group("model")
    grp.add_argument(
        "--model", default=_env(MODEL_ENV, DEFAULT_MODEL),
        help=f"BGE-M3 checkpoint directory or hub id (default: ${MODEL_ENV} or {DEFAULT_MODEL})",
    )
    grp.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 when available, else cpu)")
    grp.add_argument("--max-length", type=_positive, default=None,
                     help="most tokens per text (documents for ingest, queries for search)")

    parser = argparse.ArgumentParser(
        prog="milvus-m3",
        description="Hybrid dense + learned-sparse retrieval for Milvus with BGE-M3.",
        epilog="Run 'milvus-m3 COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"milvus-m3 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # create
    p = sub.add_parser("create", parents=[common, model], help="create a collection for BGE-M3 vectors",
                       description="Create a collection. The dense dim comes from --dense-dim, else the "
                       "checkpoint's config.json (the model is not loaded).")
    p.add_argument("--collection", required=True)
    p.add_argument("--dense-dim", type=_positive, default=None, help="dense vector size (default: from the model)")
    p.add_argument("--chunked", action="store_true", help="add parent_id and chunk_index (for ingest --chunk-tokens)")
    p.add_argument("--dense-index", default="auto", help="auto (HNSW on a server, AUTOINDEX on Lite), HNSW, FLAT, ...")
    p.add_argument("--hnsw-m", type=_positive, default=16)
    p.add_argument("--hnsw-ef-construction", type=_positive, default=200)
    p.add_argument("--ivf-nlist", type=_positive, default=1024)
    p.add_argument("--sparse-index", choices=("SPARSE_INVERTED_INDEX", "SPARSE_WAND"), default="SPARSE_INVERTED_INDEX")
    p.add_argument("--sparse-drop-ratio-build", type=float, default=0.0)
    p.add_argument("--id-type", choices=("varchar", "int64"), default="varchar")
    p.add_argument("--text-max-length", type=_positive, default=65_535, help="bytes of text stored per row")
    p.add_argument("--consistency-level", choices=("Strong", "Bounded", "Session", "Eventually"), default="Strong")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exists-ok", action="store_true", help="keep an existing collection (checked against the spec)")
    how.add_argument("--recreate", action="store_true", help="drop an existing collection first (its data is lost)")
    p.add_argument("--json", action="store_true", help="print the collection's description as JSON")
    p.set_defaults(func=_cmd_create)

    # ingest
    p = sub.add_parser("ingest", parents=[common, model], help="embed files and upsert them into a collection",
                       description="Stream JSONL, CSV, TSV, Parquet or BEIR corpus files ('-' for stdin, gzip "
                       "recognised) into a collection: resumable, idempotent (upserts by id), bad rows reported. "
                       "A missing collection is created (chunked when --chunk-tokens is given).")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files; '-' reads stdin")
    p.add_argument("--collection", required=True)
    p.add_argument("--format", choices=("auto", "jsonl", "csv", "tsv", "parquet", "beir"), default="auto",
                   help="input format (default: from the name, then the first bytes; corpus.jsonl is BEIR)")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument("--id-field", default=None,
                     help="id column (default: 'id' or '_id' when the file has one, else content hashes)")
    ids.add_argument("--hash-ids", action="store_true", help="ids are blake2b hashes of the text, always")
    p.add_argument("--text-field", default="text")
    p.add_argument("--title-field", default=None, help="embedded as '<title> <text>' and kept in the metadata")
    p.add_argument("--metadata-fields", type=_field_list, default=[], help="comma-separated fields kept as metadata")
    p.add_argument("--batch-size", type=_positive, default=64, help="records per batch (default 64)")
    p.add_argument("--resume", action="store_true", help="skip what the interrupted run with these options wrote")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip: report bad rows and go on; fail: stop before writing the batch holding one")
    p.add_argument("--errors", default=None, metavar="PATH",
                   help="bad rows as JSON lines (default: next to the state file, *.ingest-errors.jsonl)")
    p.add_argument("--state", default=None, metavar="PATH",
                   help="checkpoint file (default: next to a Lite .db file, <db>.<collection>.ingest-state.json)")
    p.add_argument("--chunk-tokens", type=_positive, default=None, help="split documents into chunks of N tokens")
    p.add_argument("--chunk-overlap", type=_non_negative, default=0, help="tokens shared by consecutive chunks")
    p.add_argument("--truncate", action="store_true",
                   help="embed texts beyond the max length cut to it (default: they are bad rows)")
    p.add_argument("--encode-batch-size", type=_positive, default=16, help="texts per model forward pass")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no notes")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_cmd_ingest)

    # search
    p = sub.add_parser("search", parents=[common, model], help="search a collection",
                       description="Hybrid (dense + sparse, fused), dense or sparse search.")
    p.add_argument("query")
    p.add_argument("--collection", required=True)
    p.add_argument("--limit", type=_positive, default=10)
    p.add_argument("--offset", type=_non_negative, default=0)
    p.add_argument("--mode", choices=("hybrid", "dense", "sparse", "m3", "m3-all"), default="hybrid",
                   help="m3: dense + 0.3 x sparse raw scores over both candidate lists; m3-all: + ColBERT")
    p.add_argument("--ranker", choices=("rrf", "weighted"), default="rrf", help="how hybrid mode fuses (default rrf)")
    p.add_argument("--filter", default=None, metavar="EXPR", help="Milvus boolean expression on stored fields")
    p.add_argument("--group-by", default=None, metavar="FIELD",
                   help="one hit per value of FIELD (parent_id: one hit per document in a chunked collection)")
    p.add_argument("--json", action="store_true", help="one JSON object per hit: id, score, text, metadata")
    p.set_defaults(func=_cmd_search)

    # eval (its module imports numpy and the stdlib only; models load inside the command)
    from .eval import add_eval_parser

    add_eval_parser(sub, parents=[common, model])

    # info
    p = sub.add_parser("info", parents=[common], help="count, schema and model of a collection (or list them)")
    p.add_argument("--collection", default=None, help="the collection (default: list all with their counts)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    # drop
    p = sub.add_parser("drop", parents=[common], help="drop a collection and its data")
    p.add_argument("--collection", required=True)
    p.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    p.set_defaults(func=_cmd_drop)
    return parser


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if "://" not in os.environ.get(URI_ENV, "://"):
        # pymilvus parses $MILVUS_URI when it is imported and refuses a Milvus Lite path; it is read above.
        del os.environ[URI_ENV]
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("milvus-m3: interrupted", file=sys.stderr)
        return 130
    except MilvusM3Error as exc:
        print(f"milvus-m3: error: {_redact(str(exc), args)}", file=sys.stderr)
        report = getattr(exc, "report", None)
        if report is not None and getattr(args, "command", None) == "ingest":
            _print_report(report, args)
        return 2 if isinstance(exc, (ConfigError, InputError)) else 1
    except BrokenPipeError:  # `milvus-m3 search ... | head`: stop quietly, as the docs of signal advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - an error from below (pymilvus, torch, OS): one line, no secrets
        if args.verbose:
            import traceback

            print(_redact("".join(traceback.format_exception(exc)), args), file=sys.stderr, end="")
        detail = _redact(" ".join(str(exc).split()), args)
        print(f"milvus-m3: error: {type(exc).__name__}: {detail}"
              + ("" if args.verbose else " (-v shows the traceback)"), file=sys.stderr)
        return 1


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("milvus-m3: %(levelname)s: %(message)s"))
    root = logging.getLogger("milvus_m3")
    root.addHandler(handler)
    root.setLevel(level)
    if not verbose:
        # transformers reads this when it is first imported; its tokenizer notes are noise here.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        warnings.filterwarnings("ignore", category=FutureWarning)


def _redact(text: str, args: argparse.Namespace) -> str:
    """``text`` without the token and without credentials written into the URI."""
    from ..connection import redact_uri

    uri = getattr(args, "uri", None) or ""
    secrets: list[str] = []
    token = getattr(args, "token", None)
    if token:
        secrets += [token, *(part for part in token.split(":", 1) if len(part) >= 4)]
    if uri:
        from urllib.parse import urlsplit

        text = text.replace(uri, redact_uri(uri))
        try:
            password = urlsplit(uri).password
        except ValueError:
            password = None
        if password and len(password) >= 4:
            secrets.append(password)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _manager(args: argparse.Namespace) -> CollectionManager:
    from ..collection import CollectionManager

    return CollectionManager(args.uri, token=args.token or None)


def _embedder(args: argparse.Namespace, *, kind: str, overflow: str, batch_size: int = 16) -> M3Embedder:
    from ..embedder import M3Embedder

    kwargs: dict[str, Any] = {"device": args.device, "overflow": overflow, "batch_size": batch_size}
    if args.max_length is not None:
        kwargs["document_max_length" if kind == "document" else "query_max_length"] = args.max_length
    return M3Embedder(args.model, **kwargs)


def _note(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"milvus-m3: {text}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- commands


def _cmd_create(args: argparse.Namespace) -> int:
    from ..collection import CollectionSpec

    dim = args.dense_dim if args.dense_dim is not None else dense_dim_of(args.model, args)
    spec = CollectionSpec(
        dense_dim=dim,
        model_name=args.model,
        id_type=args.id_type,
        text_max_length=args.text_max_length,
        dense_index=args.dense_index,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        ivf_nlist=args.ivf_nlist,
        sparse_index=args.sparse_index,
        sparse_drop_ratio_build=args.sparse_drop_ratio_build,
        chunked=args.chunked,
        consistency_level=args.consistency_level,
    )
    with _manager(args) as manager:
        existed = manager.has_collection(args.collection)
        info = manager.create_collection(args.collection, spec=spec, exists_ok=args.exists_ok, recreate=args.recreate)
        if args.json:
            print(json.dumps(_info_json(info, manager.uri), ensure_ascii=False))
        else:
            verb = "kept existing" if existed and args.exists_ok else "recreated" if existed else "created"
            print(
                f"{verb} collection {info.name!r} at {manager.uri}: dense {dim}-d "
                f"{info.indexes.get('dense', {}).get('index_type', '?')}, sparse {spec.sparse_index}, "
                f"model {spec.model_name}{', chunked' if spec.chunked else ''}, {info.count} rows"
            )
    return 0


def dense_dim_of(model: str, args: argparse.Namespace | None = None) -> int:
    """The dense dim of ``model`` without loading it when possible: a local directory's config.json,
    the Hugging Face cache's copy, the known hub models; else the model is loaded."""
    path = Path(model).expanduser()
    config: Path | None = path / "config.json" if path.is_dir() else None
    if config is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            if isinstance(cached, str):
                config = Path(cached)
        except Exception:  # noqa: BLE001 - the cache is only a shortcut
            config = None
    if config is not None and config.is_file():
        try:
            hidden = int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{config} has no readable hidden_size ({exc}); pass --dense-dim") from exc
        return hidden
    if model in KNOWN_DENSE_DIMS:
        return KNOWN_DENSE_DIMS[model]
    if args is None:
        raise ConfigError(f"cannot tell the dense dim of {model!r} without loading it; pass --dense-dim")
    return _embedder(args, kind="document", overflow="truncate").dense_dim


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ..collection import CollectionSpec
    from ..ingest import default_state_path, detect_format, ingest

    for f in args.files:  # fail on a missing file or unknown format before the model loads
        if f != "-" and not os.path.isfile(f):
            raise ConfigError(f"input file {f} does not exist or is not a file")
        if f != "-":
            detect_format(f, args.format)
    if args.files.count("-") > 1:
        raise ConfigError("'-' (stdin) can be given once")
    if args.chunk_overlap and args.chunk_tokens is None:
        raise ConfigError("--chunk-overlap needs --chunk-tokens")
    state = Path(args.state) if args.state else default_state_path(args.uri, args.collection)
    errors = Path(args.errors) if args.errors else state.with_name(
        state.name.replace(".ingest-state.json", ".ingest-errors.jsonl")
    )
    with _manager(args) as manager:
        if manager.has_collection(args.collection):
            manager.spec(args.collection)  # refuses a collection milvus-m3 did not build, before the model loads
        embedder = _embedder(args, kind="document", overflow="truncate", batch_size=args.encode_batch_size)
        if not manager.has_collection(args.collection):
            spec = CollectionSpec(
                dense_dim=embedder.dense_dim, model_name=embedder.model_name, chunked=args.chunk_tokens is not None
            )
            manager.create_collection(args.collection, spec=spec)
            _note(args, f"created collection {args.collection!r} at {manager.uri} "
                  f"(dense {spec.dense_dim}-d{', chunked' if spec.chunked else ''})")
            if args.resume and state.is_file():
                # The checkpoint describes rows of a collection that is gone: skipping them would lose them.
                _note(args, f"the collection was missing, so {state} no longer applies: starting from the beginning")
                args.resume = False
        report = ingest(
            args.files,
            manager=manager,
            collection=args.collection,
            encoder=embedder,
            format=args.format,
            id_field=args.id_field,
            hash_ids=args.hash_ids,
            text_field=args.text_field,
            title_field=args.title_field,
            metadata_fields=args.metadata_fields,
            batch_size=args.batch_size,
            on_error=args.on_error,
            errors_path=errors,
            state_path=state,
            resume=args.resume,
            chunk_tokens=args.chunk_tokens,
            chunk_overlap=args.chunk_overlap,
            truncate=args.truncate,
            progress=False if args.quiet else None,
        )
    _print_report(report, args)
    return 0


def _print_report(report: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print(report.summary())


def _cmd_search(args: argparse.Namespace) -> int:
    from ..search import HybridSearcher

    with _manager(args) as manager:
        manager.spec(args.collection)  # a missing collection fails before the model loads
        embedder = _embedder(args, kind="query", overflow="warn")
        searcher = HybridSearcher(manager, args.collection, embedder, mode=args.mode, ranker=args.ranker)
        hits = searcher.search(
            args.query, limit=args.limit, offset=args.offset, filter=args.filter, group_by=args.group_by
        )
    for rank, hit in enumerate(hits, 1 + args.offset):
        if args.json:
            doc: dict[str, Any] = {"id": hit.id, "score": hit.score, "text": hit.text, "metadata": dict(hit.metadata)}
            if hit.fields:
                doc["fields"] = dict(hit.fields)
            print(json.dumps(doc, ensure_ascii=False, default=str))
        else:
            text = " ".join((hit.text or "").split())
            if len(text) > 100:
                text = text[:97] + "..."
            print(f"{rank:>3}. {hit.score:.4f}  {hit.id}  {text}")
    if not hits and not args.json:
        print("no hits", file=sys.stderr)
    return 0


def _info_json(info: Any, uri: str) -> dict[str, Any]:
    return {
        "uri": uri,
        "name": info.name,
        "count": info.count,
        "model": info.model_name,
        "dense_dim": info.dense_dim,
        "built_by_version": info.built_by_version,
        "fields": list(info.fields),
        "indexes": {k: dict(v) for k, v in info.indexes.items()},
        "spec": info.spec.to_json() if info.spec is not None else None,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        if args.collection is None:
            names = manager.list_collections()
            counts = {n: manager.count(n) for n in names}
            if args.json:
                print(json.dumps({"uri": manager.uri, "collections": counts}, ensure_ascii=False))
            else:
                print(f"{manager.uri}: {len(names)} collection{'s' if len(names) != 1 else ''}")
                for n in names:
                    print(f"  {n}: {counts[n]} rows")
            return 0
        info = manager.describe(args.collection)
        data = _info_json(info, manager.uri)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(f"collection {data['name']} at {data['uri']}")
    print(f"  rows:      {data['count']}")
    if info.spec is None:
        print("  built by:  not milvus-m3 (no milvus-m3 record)")
    else:
        print(f"  model:     {data['model']} (dense {data['dense_dim']}-d)")
        print(f"  built by:  milvus-m3 {data['built_by_version']}")
        print(f"  chunked:   {'yes' if info.spec.chunked else 'no'}; ids {info.spec.id_type}")
    print(f"  fields:    {', '.join(data['fields'])}")
    for fld, idx in data["indexes"].items():
        params = ", ".join(f"{k}={v}" for k, v in idx.items())
        print(f"  index:     {fld}: {params}")
    return 0


def _cmd_drop(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        if not manager.has_collection(args.collection):
            from ..errors import CollectionNotFoundError

            raise CollectionNotFoundError(f"collection {args.collection!r} does not exist at {manager.uri}")
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError(
                    f"refusing to drop {args.collection!r} without confirmation: stdin is not a terminal; "
                    "pass --yes to drop it"
                )
            count = manager.count(args.collection)
            answer = input(f"drop collection {args.collection!r} at {manager.uri} ({count} rows)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not dropped", file=sys.stderr)
                return 1
        manager.drop(args.collection)
    print(f"dropped collection {args.collection!r}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
