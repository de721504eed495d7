"""``milvus-m3``'s commands: one function per subcommand, and ``main`` that runs one (the parser is parser.py).

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

from ..errors import ConfigError, InputError, MilvusM3Error
from .parser import URI_ENV, build_parser, from_args

if TYPE_CHECKING:
    from ..collection import CollectionManager
    from ..embedder import M3Embedder

__all__ = ["COMMANDS", "dense_dim_of", "main"]

logger = logging.getLogger("milvus_m3.cli")


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
        code: int = COMMANDS[args.command](args)
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
    except Exception as exc:
        if args.verbose:
            import traceback

            print(_redact("".join(traceback.format_exception(exc)), args), file=sys.stderr, end="")
        detail = _redact(" ".join(str(exc).split()), args)
        print(
            f"milvus-m3: error: {type(exc).__name__}: {detail}"
            + ("" if args.verbose else " (-v shows the traceback)"),
            file=sys.stderr,
        )
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

    kwargs: dict[str, Any] = {
        "device": args.device,
        "overflow": overflow,
        "batch_size": batch_size,
        "threads": args.threads,
        "max_batch_tokens": getattr(args, "max_batch_tokens", None),
    }
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
    spec = from_args(CollectionSpec, args, dense_dim=dim, model_name=args.model)
    with _manager(args) as manager:
        existed = manager.has_collection(args.collection)
        info = manager.create_collection(
            args.collection, spec=spec, exists_ok=args.exists_ok, recreate=args.recreate
        )
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
    """The dense dim of ``model`` without loading it when possible (``checkpoint.dense_dim_from_config``);
    else the model is loaded."""
    from ..checkpoint import dense_dim_from_config

    dim = dense_dim_from_config(model)
    if dim is not None:
        return dim
    if args is None:
        raise ConfigError(f"cannot tell the dense dim of {model!r} without loading it; pass --dense-dim")
    return _embedder(args, kind="document", overflow="truncate").dense_dim


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ..collection import CollectionSpec
    from ..ingest import IngestOptions, default_state_path, detect_format, ingest

    if args.engine == "ray":
        return _cmd_ingest_ray(args)
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
    errors = (
        Path(args.errors)
        if args.errors
        else state.with_name(state.name.replace(".ingest-state.json", ".ingest-errors.jsonl"))
    )
    with _manager(args) as manager:
        if manager.has_collection(args.collection):
            # refuses a collection milvus-m3 did not build, or other sparse sizes, before the model loads
            _check_sparse_size(args, manager.spec(args.collection))
        embedder = _embedder(args, kind="document", overflow="truncate", batch_size=args.encode_batch_size)
        if not manager.has_collection(args.collection):
            spec = CollectionSpec(
                dense_dim=embedder.dense_dim,
                model_name=embedder.model_name,
                chunked=args.chunk_tokens is not None,
                partition_key=args.tenant_field,
                **_sparse_size(args),
            )
            manager.create_collection(args.collection, spec=spec)
            _note(
                args,
                f"created collection {args.collection!r} at {manager.uri} "
                f"(dense {spec.dense_dim}-d{', chunked' if spec.chunked else ''})",
            )
            if args.resume and state.is_file():
                # The checkpoint describes rows of a collection that is gone: skipping them would lose them.
                _note(
                    args,
                    f"the collection was missing, so {state} no longer applies: starting from the beginning",
                )
                args.resume = False
        report = ingest(
            args.files,
            manager=manager,
            collection=args.collection,
            encoder=embedder,
            options=from_args(IngestOptions, args),
            errors_path=errors,
            state_path=state,
            resume=args.resume,
            progress=False if args.quiet else None,
        )
    _print_report(report, args)
    return 0


def _cmd_ingest_ray(args: argparse.Namespace) -> int:
    """ingest --engine ray: the model loads in the actors only (the dense dim comes from config.json)."""
    from ..collection import CollectionSpec
    from ..ingest import IngestOptions, default_state_path
    from ..ingest.ray_engine import M3EmbedderFactory, RayOptions, ray_ingest

    if args.resume:
        raise ConfigError(
            "--resume is for --engine local; a Ray job is finished by running it again "
            "(upserts make that safe), with --skip-existing to pass over what is stored"
        )
    ray_options = from_args(RayOptions, args, address=args.ray_address)  # checked before Ray starts
    state = Path(args.state) if args.state else default_state_path(args.uri, args.collection)
    errors = (
        Path(args.errors)
        if args.errors
        else state.with_name(state.name.replace(".ingest-state.json", ".ingest-errors.jsonl"))
    )
    kwargs: dict[str, Any] = {
        "device": args.device,
        "batch_size": args.encode_batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "threads": args.threads,
    }
    if args.max_length is not None:
        kwargs["document_max_length"] = args.max_length
    with _manager(args) as manager:
        if manager.has_collection(args.collection):
            _check_sparse_size(args, manager.spec(args.collection))
        else:
            spec = CollectionSpec(
                dense_dim=dense_dim_of(args.model, args),
                model_name=args.model,
                chunked=args.chunk_tokens is not None,
                **_sparse_size(args),
            )
            manager.create_collection(args.collection, spec=spec)
            _note(args, f"created collection {args.collection!r} at {manager.uri} (dense {spec.dense_dim}-d)")
        report = ray_ingest(
            args.files,
            manager=manager,
            collection=args.collection,
            encoder=M3EmbedderFactory(model=args.model, **kwargs),
            options=from_args(IngestOptions, args),
            ray_options=ray_options,
            errors_path=errors,
            progress=False if args.quiet else None,
        )
    _print_report(report, args)
    return 0


def _sparse_size(args: argparse.Namespace) -> dict[str, Any]:
    names = ("sparse_top_k", "sparse_mass", "sparse_inverted_index_algo")
    return {name: getattr(args, name) for name in names}


def _check_sparse_size(args: argparse.Namespace, stored: Any) -> None:
    """Sparse size flags given for an existing collection must be the ones in its build record."""
    for name, value in _sparse_size(args).items():
        if value is not None and getattr(stored, name) != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"collection {args.collection!r} was built with {name}={getattr(stored, name)!r}, "
                f"not {flag} {value}: its rows are stored that way and searches prune queries to match; "
                f"drop {flag}, or ingest into a new collection"
            )


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
            args.query,
            limit=args.limit,
            offset=args.offset,
            filter=args.filter,
            group_by=args.group_by,
            tenant=args.tenant,
        )
    for rank, hit in enumerate(hits, 1 + args.offset):
        if args.json:
            doc: dict[str, Any] = {
                "id": hit.id,
                "score": hit.score,
                "text": hit.text,
                "metadata": dict(hit.metadata),
            }
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import run_eval_cli

    return run_eval_cli(args)


COMMANDS = {
    "create": _cmd_create,
    "ingest": _cmd_ingest,
    "search": _cmd_search,
    "eval": _cmd_eval,
    "info": _cmd_info,
    "drop": _cmd_drop,
}
"""Subcommand name -> the function that runs it (the parser in parser.py declares the options)."""
