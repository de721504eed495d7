"""The ingest command: files into a collection, on this machine or on Ray (--engine ray)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._messages import drop_if_empty, remove_new_lite_file
from ._parts import dense_dim_of, embedder_from_args, manager_from_args, note, print_report
from .parser import EXIT_REJECTED, from_args

__all__ = ["run_ingest"]


def run_ingest(args: argparse.Namespace) -> int:
    """``milvus-m3 ingest``: stream the files into the collection (``--engine ray``: on Ray Data)."""
    from ..collection.manager import CollectionSpec
    from ..ingest import IngestOptions, detect_format, ingest

    if args.engine == "ray":
        return _run_ray(args)
    for f in args.files:  # fail on a missing file or unknown format before the model loads
        if f != "-" and not os.path.isfile(f):
            raise ConfigError(f"input file {f} does not exist or is not a file")
        if f != "-":
            detect_format(f, args.format)
    if args.files.count("-") > 1:
        raise ConfigError("'-' (stdin) can be given once")
    if args.chunk_overlap and args.chunk_tokens is None:
        raise ConfigError("--chunk-overlap needs --chunk-tokens")
    if args.force_resume and not args.resume:
        raise ConfigError("--force-resume goes with --resume")
    state, errors = _job_paths(args)
    with remove_new_lite_file(args.uri), manager_from_args(args) as manager:
        if manager.has_collection(args.collection):
            # refuses a collection milvus-m3 did not build, or other sparse sizes, before the model loads
            _check_sparse_size(args, manager.spec(args.collection))
        embedder = embedder_from_args(
            args, kind="document", overflow="truncate", batch_size=args.encode_batch_size
        )
        created = not manager.has_collection(args.collection)
        if created:
            spec = CollectionSpec(
                dense_dim=embedder.dense_dim,
                model_name=embedder.model_name,
                model_fingerprint=embedder.model_fingerprint,
                chunked=args.chunk_tokens is not None,
                partition_key=args.tenant_field,
                **_sparse_size(args),
            )
            manager.create_collection(args.collection, spec=spec)
            note(
                args,
                f"created collection {args.collection!r} at {manager.uri} "
                f"(dense {spec.dense_dim}-d{', chunked' if spec.chunked else ''})",
            )
            if args.resume and state.is_file():
                # The checkpoint describes rows of a collection that is gone: skipping them would lose them.
                note(
                    args,
                    f"the collection was missing, so {state} no longer applies: starting from the beginning",
                )
                args.resume = False
        try:
            report = ingest(
                args.files,
                manager=manager,
                collection=args.collection,
                encoder=embedder,
                options=from_args(IngestOptions, args),
                errors_path=errors,
                state_path=state,
                resume=args.resume,
                force_resume=args.force_resume,
                progress=False if args.quiet else None,
            )
        except BaseException:
            if created:
                drop_if_empty(manager, args.collection, state, lambda text: note(args, text))
            raise
    print_report(report, args)
    return EXIT_REJECTED if args.strict_exit and report.failed else 0


def _job_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(state, errors) of a job, both engines: as given, else the state keyed by the target and the
    inputs (``default_state_path``) and the errors file next to it (never the state file itself:
    ``--state s.json`` gives ``s.ingest-errors.jsonl``)."""
    from ..ingest import default_state_path

    state = (
        Path(args.state) if args.state else default_state_path(args.uri, args.collection, inputs=args.files)
    )
    suffix = ".ingest-state.json"
    stem = state.name[: -len(suffix)] if state.name.endswith(suffix) else state.stem
    errors = Path(args.errors) if args.errors else state.with_name(stem + ".ingest-errors.jsonl")
    return state, errors


def _run_ray(args: argparse.Namespace) -> int:
    """ingest --engine ray: the model loads in the actors only (the dense dim comes from config.json)."""
    from ..collection.manager import CollectionSpec
    from ..embedder.checkpoint import fingerprint_of
    from ..engine.uri import is_local_file_uri
    from ..ingest import IngestOptions
    from ..ingest.guard import check_paths
    from ..ingest.ray_engine import M3EmbedderFactory, RayOptions, ray_ingest

    if args.resume:
        raise ConfigError(
            "--resume is for --engine local; a Ray job is finished by running it again "
            "(upserts make that safe), with --skip-existing to pass over what is stored"
        )
    ray_options = from_args(RayOptions, args, address=args.ray_address)  # checked before Ray starts
    # the local engine's paths and guards: a Ray job writes no state, but --state names its errors file,
    # and neither may be an input, the Lite database or a file that is not the job's own
    state, errors = _job_paths(args)
    local = [f for f in args.files if "://" not in f]  # not object-store URIs
    check_paths(local, state, errors, args.uri if is_local_file_uri(args.uri) else None)
    kwargs: dict[str, Any] = {
        "device": args.device,
        "batch_size": args.encode_batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "threads": args.threads,
    }
    if args.max_length is not None:
        kwargs["document_max_length"] = args.max_length
    with manager_from_args(args) as manager:
        if manager.has_collection(args.collection):
            _check_sparse_size(args, manager.spec(args.collection))
        else:
            # the local engine's record: the model's name and fingerprint (read on the driver without
            # loading it); a model the driver cannot see is recorded by the job's first write instead
            # (its actors' fingerprint, check_collection(record_model=True)), never by name alone
            fingerprint = fingerprint_of(args.model)
            spec = CollectionSpec(
                dense_dim=dense_dim_of(args.model, args),
                model_name=args.model if fingerprint is not None else "",
                model_fingerprint=fingerprint,
                chunked=args.chunk_tokens is not None,
                partition_key=args.tenant_field,
                **_sparse_size(args),
            )
            manager.create_collection(args.collection, spec=spec)
            note(args, f"created collection {args.collection!r} at {manager.uri} (dense {spec.dense_dim}-d)")
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
    print_report(report, args)
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
