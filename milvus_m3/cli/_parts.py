"""The three parts built from parsed arguments (the manager, the embedder), the notes a command writes
to stderr, and the one way an ingest report is printed: shared by the create, search and ingest
commands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._connection_args import connection_options
from ._messages import json_line

if TYPE_CHECKING:
    from ..collection.manager import CollectionManager
    from ..embedder.model import M3Embedder

__all__ = ["dense_dim_of", "embedder_from_args", "manager_from_args", "note", "print_report"]


def manager_from_args(args: argparse.Namespace) -> CollectionManager:
    from ..collection.manager import CollectionManager

    manager = CollectionManager(args.uri, options=connection_options(args))
    if not getattr(args, "verbose", False):
        # pymilvus set up its loggers (a stderr handler, ERROR records with tracebacks for every engine
        # error) when it was imported just now; the CLI's one error line says it. -v shows them.
        for name in ("pymilvus", "pymilvus.milvus_client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return manager


def embedder_from_args(
    args: argparse.Namespace, *, kind: str, overflow: str, batch_size: int = 16
) -> M3Embedder:
    from ..embedder.model import M3Embedder

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


def note(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"milvus-m3: {text}", file=sys.stderr)


def dense_dim_of(model: str, args: argparse.Namespace | None = None) -> int:
    """The dense dim of ``model`` without loading it when possible (``checkpoint.dense_dim_from_config``);
    else the model is loaded."""
    from ..embedder.checkpoint import dense_dim_from_config

    dim = dense_dim_from_config(model)
    if dim is not None:
        return dim
    if args is None:
        raise ConfigError(f"cannot tell the dense dim of {model!r} without loading it; pass --dense-dim")
    return embedder_from_args(args, kind="document", overflow="truncate").dense_dim


def print_report(report: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json_line(report.to_json()))
    else:
        print(report.summary())
