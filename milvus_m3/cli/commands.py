"""``milvus-m3``'s commands: one function per subcommand, and ``main`` that runs one (the parser is parser.py).

    milvus-m3 [-v] create  --collection NAME [--uri URI] [--token T] [--model M] [index options]
    milvus-m3 [-v] ingest  FILE... --collection NAME [--id-field id] [--text-field text] [--title-field title]
                           [--metadata-fields a,b] [--batch-size N] [--resume] [--on-error skip|fail]
                           [--strict-exit] ...
    milvus-m3 [-v] search  "query" --collection NAME [--limit 10] [--mode hybrid|dense|sparse|m3|m3-all]
                           [--filter EXPR] [--group-by parent_id] [--json]
    milvus-m3 [-v] eval    DATASET_DIR [--modes dense,sparse,...] [--max-docs N] [--out DIR] [-q]
    milvus-m3 [-v] info    [--collection NAME] [--json]
    milvus-m3 [-v] drop    --collection NAME [--yes]

``--uri``, ``--token`` and ``--model`` default to ``$MILVUS_URI`` (else ``./milvus_m3.db``, Milvus Lite),
``$MILVUS_TOKEN`` and ``$MILVUS_M3_MODEL`` (else ``BAAI/bge-m3``); ``--timeout``, ``--retries``,
``--db-name`` and the TLS flags fill ``ConnectionOptions``. Each command imports its heavy parts
(pymilvus, torch, FlagEmbedding) when it runs: ``--help``, ``info`` and ``drop`` never load torch, and
``create`` reads the dense dim from the checkpoint's ``config.json`` instead of loading the model.
Read-only commands (``info``, ``search``, ``drop``) never create a Milvus Lite file; a failed
``create`` or ``ingest`` leaves what was there before (a new empty collection or Lite file is removed).

Exit codes: 0 done; 1 a failure (Milvus, model, collection); 2 a usage or input error (bad option,
bad file, a bad row with ``--on-error fail``); 3 ``ingest --strict-exit`` finished with rejected rows;
130 interrupted, 143 terminated (SIGTERM; stopped as on Ctrl-C). Errors are one line on stderr, without a traceback and without the token, and name
the CLI's flags (``--exists-ok``, ``--model``) where the library's message names its parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InputError, MilvusM3Error
from ._messages import (
    FirstRetryOnly,
    check_read_only_target,
    filter_hint,
    for_cli,
    json_line,
    remove_new_lite_file,
    remove_state_file,
    show_warning,
    terminal_safe,
)
from ._parts import dense_dim_of, embedder_from_args, manager_from_args, print_report
from .parser import URI_ENV, build_parser, from_args

if TYPE_CHECKING:
    pass

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
        with _sigterm_as_interrupt():
            check_read_only_target(args)
            code: int = COMMANDS[args.command](args)
        return code
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (_Terminated; Ray Data re-raises it as a plain one)
        if _TERMINATED.is_set():
            print("milvus-m3: terminated (SIGTERM); stopped as on Ctrl-C", file=sys.stderr)
            return 143
        print("milvus-m3: interrupted", file=sys.stderr)
        return 130
    except MilvusM3Error as exc:
        print(f"milvus-m3: error: {for_cli(_redact(str(exc), args), exc, args)}", file=sys.stderr)
        report = getattr(exc, "report", None)
        if report is not None and getattr(args, "command", None) == "ingest":
            print_report(report, args)
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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the command as Ctrl-C's KeyboardInterrupt is, so that a job stops the same way
    (``ingest`` saves its state, a Ray job shuts its Ray down); the exit code is 143 (128 + SIGTERM)."""


_TERMINATED = threading.Event()
"""Set by SIGTERM: whatever KeyboardInterrupt the command ends with is then its exit 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _TERMINATED.set()
    raise _Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``_Terminated`` while the command runs (the main thread only can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _TERMINATED.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("milvus-m3: %(levelname)s: %(message)s"))
    root = logging.getLogger("milvus_m3")
    root.setLevel(level)
    if verbose:
        root.addHandler(handler)
    else:
        # The error line says what failed: Milvus Lite's Python part logs to the root logger (which,
        # without a handler, logging's last resort prints) and its engine logs with glog (quiet below
        # FATAL with GLOG_minloglevel=3, read when the engine starts). Our handler
        # sits on the root logger and passes our records only; -v shows everything. (pymilvus's own
        # loggers are quieted in manager_from_args, once pymilvus has configured them.)
        handler.addFilter(lambda r: r.name == "milvus_m3" or r.name.startswith("milvus_m3."))
        handler.addFilter(FirstRetryOnly())  # one line for a server that is away, not one per retry
        logging.getLogger().addHandler(handler)
        os.environ.setdefault("GLOG_minloglevel", "3")
        # transformers reads this when it is first imported; its tokenizer notes are noise here.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.showwarning = show_warning


def _redact(text: str, args: argparse.Namespace) -> str:
    """``text`` without the token and without credentials written into the URI."""
    from ..engine.connection import redact_uri

    uri = getattr(args, "uri", None) or ""
    secrets: list[str] = []
    token = getattr(args, "token", None)
    if token:
        secrets += [token, *(part for part in token.split(":", 1) if len(part) >= 4)]
    if uri:
        from ..engine.uri import split_credentials

        text = text.replace(uri, redact_uri(uri))
        cred = split_credentials(uri)[1] if "://" in uri else None
        if cred:
            secrets += [cred, *(part for part in cred.split(":", 1) if len(part) >= 4)]
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# ------------------------------------------------------------------------------------------- commands


def _cmd_create(args: argparse.Namespace) -> int:
    from ..collection.bm25 import analyzer_label
    from ..collection.manager import CollectionSpec
    from ..embedder.checkpoint import fingerprint_of

    dim = args.dense_dim if args.dense_dim is not None else dense_dim_of(args.model, args)
    spec = from_args(
        CollectionSpec,
        args,
        dense_dim=dim,
        model_name=args.model,
        model_fingerprint=fingerprint_of(args.model),
    )
    with remove_new_lite_file(args.uri), manager_from_args(args) as manager:
        existed = manager.has_collection(args.collection)
        info = manager.create_collection(
            args.collection, spec=spec, exists_ok=args.exists_ok, recreate=args.recreate
        )
        if args.json:
            print(json_line(_info_json(info, manager.uri)))
        else:
            verb = "kept existing" if existed and args.exists_ok else "recreated" if existed else "created"
            print(
                f"{verb} collection {info.name!r} at {manager.uri}: dense {dim}-d "
                f"{info.indexes.get('dense', {}).get('index_type', '?')}, sparse {spec.sparse_index}"
                f"{f', bm25 ({analyzer_label(spec)})' if spec.bm25 else ''}, "
                f"model {spec.model_name or '(unnamed: recorded by the first write)'}"
                f"{', chunked' if spec.chunked else ''}, {info.count} rows"
            )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from ..collection.schema import PARENT_FIELD
    from ..collection.tenancy import tenant_from_text
    from ..errors import FilterError
    from ..search import HybridSearcher
    from ..search.rerank_stage import DEFAULT_RERANK_DEPTH

    if args.rerank is None and args.rerank_depth is not None:
        raise ConfigError("--rerank-depth needs --rerank MODEL (the cross-encoder that reorders the hits)")

    with manager_from_args(args) as manager:
        manager.spec(args.collection)  # a missing collection fails before the model loads
        embedder = embedder_from_args(args, kind="query", overflow="warn")
        reranker = None
        if args.rerank is not None:
            from ..rerankers.cross_encoder import CrossEncoderReranker

            reranker = CrossEncoderReranker(args.rerank, device=args.device, threads=args.threads)
        searcher = HybridSearcher(
            manager,
            args.collection,
            embedder,
            mode=args.mode,
            ranker=args.ranker,
            rrf_k=args.rrf_k,
            legs=args.legs,
            weights=args.weights,
            candidate_limit=args.candidates,
            norm_score=not args.raw_scores,
            reranker=reranker,
            rerank_depth=args.rerank_depth or DEFAULT_RERANK_DEPTH,
        )
        spec = manager.spec(args.collection)
        if args.group_by == PARENT_FIELD and spec is not None and not spec.chunked:
            raise ConfigError(
                f"collection {args.collection!r} is not chunked: each row is a whole document already, so "
                "search without --group-by (documents are split into chunks with parent_id by ingest "
                "--chunk-tokens N into a new collection)"
            )
        try:
            hits = searcher.search(
                args.query,
                limit=args.limit,
                offset=args.offset,
                filter=args.filter,
                group_by=args.group_by,
                tenant=None if args.tenant is None else tenant_from_text(spec, args.tenant),
                language=args.language,
            )
        except FilterError as exc:
            hint = filter_hint(args.filter, manager.describe(args.collection).fields)
            if not hint:
                raise
            raise FilterError(f"{exc}. {hint}") from exc
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
            if hit.rerank_score is not None:
                doc["first_stage_score"] = hit.first_stage_score
            print(json_line(doc))
        else:
            text = " ".join((hit.text or "").split())
            if len(text) > 100:
                text = text[:97] + "..."
            print(f"{rank:>3}. {hit.score:.4f}  {terminal_safe(str(hit.id))}  {terminal_safe(text)}")
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
    with manager_from_args(args) as manager:
        if args.collection is None:
            names = manager.list_collections()
            counts = {n: manager.count(n) for n in names}
            if args.json:
                print(json_line({"uri": manager.uri, "collections": counts}))
            else:
                print(f"{manager.uri}: {len(names)} collection{'s' if len(names) != 1 else ''}")
                for n in names:
                    print(f"  {n}: {counts[n]} rows")
            return 0
        info = manager.describe(args.collection)
        data = _info_json(info, manager.uri)
    if args.json:
        print(json_line(data))
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
    with manager_from_args(args) as manager:
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
    from ..ingest import default_state_path

    state = default_state_path(args.uri, args.collection)
    if remove_state_file(state, args.collection):
        print(f"removed its ingest state file {state}", file=sys.stderr)
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import run_ingest

    return run_ingest(args)


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
