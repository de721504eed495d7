"""``ray_ingest()``: batch ingestion on Ray Data, for corpora one machine cannot embed in time.

The same job as ``ingest()`` (same inputs, ids, rows, bad-row reports and upserts), spread over a Ray
cluster: a read step turns each input (a local path every node can see, or an object-store URI such as
``s3://bucket/corpus.jsonl`` that pyarrow's filesystems read, as Ray's own readers do) into batches of
``batch_size`` records; an actor pool of ``actors`` embedding actors (``gpus_per_actor`` /
``cpus_per_actor`` each) prepares every batch with ``prepare.Preparer`` and upserts its rows.

Writes
    To a Milvus server every actor upserts its own batches, in parallel. Milvus Lite is a file that one
    process at a time may open, so for Lite the actors send the rows back and the driver writes them
    (``Capabilities.one_process_per_file``); an actor that tries to open the file gets a ConfigError.

Exactly once
    Rows are only upserted, keyed by id, so re-running a job (after it finished, or after the driver
    died) leaves the collection as one run leaves it. An actor killed mid-batch is restarted by Ray and
    the batch retried (``retries`` times); the driver counts each batch once. ``skip_existing`` (a
    server, unchunked collections) passes over documents already stored with the same text, metadata
    and fields, so a re-run after a crash embeds only what is missing.

Repeated ids
    As in ``ingest()``, the first record of an id in input order (the inputs in the order given, then
    their lines) is the one stored, and every later one is a bad row ("duplicate id"); the report counts
    what is stored. Batches run in any order, so the driver keeps the first record of each id: for Lite
    it drops a later record's rows before writing them (and writes the first over a later one that came
    back sooner); on a server, where actors write in parallel, the first records of repeated ids are
    embedded and written once more after every batch is done, so that they are what stays. A chunked
    document whose later copy had more chunks loses those extra chunks.

Paths
    The errors file goes through the same guard as ``ingest()``'s (``guard.check_paths``: never an
    input, the Lite database, or an existing file that is not a milvus-m3 errors file) and is held
    against other jobs for the whole run (``guard.JobLock``).

Differences from ``ingest()``
    Batches never span two inputs (``ingest`` fills a batch across files). There is no checkpoint
    file: a re-run (with ``skip_existing``) is the resume. ``on_error="fail"`` stops at the first batch
    with a bad row that the driver sees; batches other actors wrote before that stay. The errors file
    is rewritten in input order at the end.

``import milvus_m3`` never imports ray; this module imports it when ``ray_ingest`` runs (the ``ray``
extra: ``pip install 'milvus-m3[ray]'``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..collection.manager import CollectionManager
from ..collection.schema import CHUNK_FIELD, PARENT_FIELD
from ..engine.uri import is_local_file_uri
from ..errors import ConfigError, IngestAborted, MilvusM3Error, MissingDependencyError
from ..filters import literal
from ..types import Encoder
from ._ray_reaper import Reaper
from ._ray_tasks import (
    RESULT,
    ActorPlan,
    BatchResult,
    EmbedWriter,
    WorkerFailure,
    is_remote,
    one_line,
    probe_encoder,
    read_batches,
)
from .checkpoint import ErrorLog, fsync_dir, source_key
from .guard import JobLock, check_paths
from .options import IngestOptions, RayOptions, build_options
from .pipeline import check_spec, progress_bar
from .prepare import split_foreign, write_owned
from .readers import EXTENSIONS, STDIN, detect_format, require_pyarrow
from .records import MAX_REPORTED_ERRORS, IngestReport, RowError, RunCounts

__all__ = ["M3EmbedderFactory", "RayOptions", "ray_ingest"]

logger = logging.getLogger("milvus_m3.ingest")


@dataclass(frozen=True, kw_only=True)
class M3EmbedderFactory:
    """Builds an ``M3Embedder`` in each actor (the model is loaded where it runs, never pickled).

    model: a checkpoint directory every node can read, or a hub id. device None: the actor's GPU when
    Ray gave it one, else the CPU. The other fields are ``M3Embedder``'s; ``extra`` passes further
    keyword arguments of it through.
    """

    model: str
    device: str | None = None
    precision: str = "auto"
    batch_size: int = 16
    document_max_length: int = 8192
    overflow: str = "truncate"
    local_files_only: bool | None = None
    max_batch_tokens: int | None = None
    """Padded tokens per forward pass (None: count only), as ``M3Embedder(max_batch_tokens=...)``."""
    threads: int | None = None
    """torch CPU threads per actor (None: M3Embedder's default; 1 when actors share a node's cores)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self) -> Encoder:
        from ..embedder.model import M3Embedder

        return M3Embedder(
            self.model,
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            document_max_length=self.document_max_length,
            overflow=self.overflow,
            local_files_only=self.local_files_only,
            max_batch_tokens=self.max_batch_tokens,
            threads=self.threads,
            **dict(self.extra),
        )


def _require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            "ingesting on Ray needs ray[data], which is not installed: pip install 'milvus-m3[ray]'"
        ) from exc
    return ray


def ray_ingest(
    files: Sequence[str | os.PathLike[str]],
    *,
    manager: CollectionManager,
    collection: str,
    encoder: Any,
    options: IngestOptions | None = None,
    ray_options: RayOptions | None = None,
    errors_path: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    **option_kwargs: Any,
) -> IngestReport:
    """Embed and upsert the records of ``files`` into ``collection`` (which must exist) on Ray Data
    (see the module documentation for writes, exactly-once results and the differences from ``ingest``).

    manager: the driver's connection; the actors open their own with its URI and options (a server),
        or send their rows to it (Milvus Lite).
    encoder: a picklable callable that builds the encoder in each actor (``M3EmbedderFactory``, or a
        checkpoint path / hub id, which means ``M3EmbedderFactory(model=...)``).
    options / option_kwargs: as for ``ingest`` (``IngestOptions`` and its fields as keywords).
    ray_options: cluster address, actors and their resources, write batch size, retries, skip_existing.
    errors_path: JSON-lines file for bad rows, one per bad row as ``ingest`` writes them.
    """
    started = time.perf_counter()
    opts = build_options(options, option_kwargs)
    ropts = ray_options or RayOptions()
    factory = (
        M3EmbedderFactory(model=os.fspath(encoder)) if isinstance(encoder, (str, os.PathLike)) else encoder
    )
    if not callable(factory):
        raise ConfigError(
            f"encoder must be a checkpoint, a hub id or a callable building one, got {encoder!r}"
        )
    sources = _check_inputs(files)
    formats = {s: _format_of(s, opts.format) for s in sources}
    # A Milvus Lite file is opened by one process at a time (``one_process_per_file``); a server, Milvus
    # Lite's own gRPC server over such a file included, takes writes from many clients.
    local_file = is_local_file_uri(manager.connection.uri)
    lite = manager.capabilities.one_process_per_file and local_file
    if ropts.skip_existing and lite:
        raise ConfigError(
            "skip_existing needs a Milvus server: the actors cannot read a Milvus Lite file (one process "
            "at a time may open it). Run without it: upserts make re-running safe"
        )
    errors = Path(errors_path) if errors_path is not None else None
    local_sources = [s for s in sources if not is_remote(s)]
    check_paths(local_sources, None, errors, manager.connection.uri if local_file else None)
    with JobLock().holding(errors):
        return _run_job(
            manager, collection, factory, opts, ropts, sources, formats, lite, errors, progress, started
        )


def _run_job(
    manager: CollectionManager,
    collection: str,
    factory: Any,
    opts: IngestOptions,
    ropts: RayOptions,
    sources: list[str],
    formats: dict[str, str],
    lite: bool,
    errors: Path | None,
    progress: bool | None,
    started: float,
) -> IngestReport:
    """``ray_ingest`` once its paths are checked and held: Ray up, the collection checked, the job run."""
    ray = _require_ray()
    reaper = _init_ray(ray, ropts.address)
    try:
        model, max_tokens = _probe(ray, factory, opts, ropts)
        spec = manager.check_collection(collection, **model)
        check_spec(spec, collection, opts)
        if ropts.skip_existing and spec.chunked:
            raise ConfigError(
                f"skip_existing works on unchunked collections; {collection!r} is chunked (a document is "
                "several rows). Run without it: upserts make re-running safe"
            )
        spec = manager.check_collection(collection, **model, record_model=True)  # a first write's model
        plan = ActorPlan(
            encoder=factory,
            options=opts,
            spec=spec,
            collection=collection,
            uri=manager.connection.uri,
            connection=manager.connection.options,
            formats=formats,
            max_tokens=max_tokens,
            writes_in_actors=not lite,
            write_batch_size=ropts.write_batch_size,
            skip_existing=ropts.skip_existing,
        )
        tally = _Tally(manager, collection, opts, ropts, sources, errors, started)
        bar = progress_bar(progress, collection, lambda: _expected_total(sources, formats))
        try:
            for result in _results(ray, _dataset(ray, plan, _items(sources), formats, ropts, progress)):
                tally.add(result)
                if bar is not None:
                    bar.update(result.read)
        finally:
            if bar is not None:
                bar.close()
        again = tally.rewrite_first()
        if again:  # a server: the first records of repeated ids, written once more after every batch
            plan = dataclasses.replace(plan, skip_existing=False)
            for result in _results(ray, _dataset(ray, plan, again, formats, ropts, False)):
                tally.rewritten(result)
        return tally.finish()
    finally:
        if reaper is not None:
            ray.shutdown()
            reaper.close()


def _check_inputs(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The inputs as strings: distinct existing local files, or URIs (checked when they are read)."""
    if isinstance(files, (str, os.PathLike)):
        raise ConfigError("files must be a list of paths or URIs, not one; wrap it: [path]")
    sources = [os.fspath(f) for f in files]
    if not sources:
        raise ConfigError("files must be a non-empty list of paths or URIs")
    seen: set[str] = set()
    for s in sources:
        if s == STDIN:
            raise ConfigError("Ray workers cannot read stdin; pass files or object-store URIs")
        key = s if is_remote(s) else source_key(s)
        if key in seen:
            raise ConfigError(f"input {s} is given twice; give each input once")
        seen.add(key)
        if not is_remote(s) and not os.path.isfile(s):
            raise ConfigError(f"input file {s} does not exist or is not a file")
    return sources


def _format_of(source: str, format: str) -> str:
    """``detect_format`` for a local file; for a URI the format given or else the one its name says."""
    if not is_remote(source):
        kind = detect_format(source, format)
    elif format != "auto":
        kind = format
    else:
        name = source.rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".gz")
        kind = "beir" if name == "corpus.jsonl" else EXTENSIONS.get(os.path.splitext(name)[1], "")
        if not kind:
            raise ConfigError(
                f"cannot tell the format of {source} from its name; pass format= (--format) for URIs"
            )
    if kind == "parquet":
        require_pyarrow(source)
    return kind


def _init_ray(ray: Any, address: str | None) -> Reaper | None:
    """Connect to (or start) Ray unless this process already has; when this call did, the watchdog that
    ends the Ray processes this job started (a local instance) if the driver dies without shutting
    it down (SIGKILL: Ray's agents outlived the driver by more than 30 s).

    ``ray.init`` replaces this process's SIGTERM handler (with one whose exit ends in SIGABRT, 134, once
    Ray's core worker runs); the caller's handler (the CLI's: a clean, named exit) is put back.
    """
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised in this process; address %r is not used", address)
        return None
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    before = Reaper.children()
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    finally:
        if main:
            signal.signal(signal.SIGTERM, sigterm if sigterm is not None else signal.SIG_DFL)
    return Reaper.start(Reaper.children() - before)


def _unwrap(exc: BaseException) -> BaseException:
    """What to raise for an error of Ray's: the milvus-m3 error inside it (Ray wraps what a worker
    raised), else a ``MilvusM3Error`` naming Ray's error on one line (no ANSI colours, no remote
    traceback); any other error as it is."""
    seen: BaseException | None = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, MilvusM3Error) and not type(seen).__module__.startswith("ray"):
            return seen
        if isinstance(cause, MilvusM3Error):
            return cause
        seen = seen.__cause__ or (cause if isinstance(cause, BaseException) else None)
    if not type(exc).__module__.startswith("ray"):
        return exc
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    name = type(inner).__name__.removeprefix("RayTaskError(").removesuffix(")")
    text = one_line(str(inner).splitlines()[0] if str(inner) else "")
    if type(inner).__module__.startswith("ray") and "Traceback" in str(inner):
        text = one_line(str(inner).split("Traceback")[0])
    return MilvusM3Error(
        f"the Ray job failed: {name}: {text} (the workers' logs are in the Ray session's log folder)"
    )


def _probe(
    ray: Any, factory: Any, opts: IngestOptions, ropts: RayOptions
) -> tuple[dict[str, Any], int | None]:
    """(the encoder's identity: ``check_collection`` keywords, max tokens) from one encoder built with
    an actor's resources."""
    task = ray.remote(probe_encoder).options(
        num_cpus=ropts.cpus_per_actor, num_gpus=ropts.gpus_per_actor, max_retries=0
    )
    try:
        model, max_tokens = ray.get(task.remote(factory, opts))
    except Exception as exc:
        raise _unwrap(exc) from None
    return dict(model), max_tokens


def _items(sources: Sequence[str]) -> list[dict[str, Any]]:
    """The read step's input: one item per input, with its position in the job."""
    return [{"index": i, "source": s} for i, s in enumerate(sources)]


def _dataset(
    ray: Any,
    plan: ActorPlan,
    items: list[dict[str, Any]],
    formats: Mapping[str, str],
    ropts: RayOptions,
    progress: bool | None,
) -> Any:
    """inputs -> read step (batches of records) -> actor pool (prepare, upsert) -> one result per batch."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.enable_progress_bars
    # One batch per block, so that the actor pool takes the batches of one input in parallel; a
    # Dataset keeps the context it was created with.
    ctx.target_max_block_size = 1
    ctx.enable_progress_bars = bool(progress)
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.flat_map(
            read_batches,
            fn_kwargs={"options": plan.options, "formats": dict(formats)},
            num_cpus=ropts.cpus_per_reader,
        )
        gpus = ropts.gpus_per_actor or None
        with warnings.catch_warnings():
            # Ray 2.60 takes the actors' restart and retry limits only as "ray_remote_args", which it
            # calls deprecated (no named parameter replaces them yet).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            return _map(ray, ds, plan, ropts, gpus)
    finally:
        ctx.target_max_block_size, ctx.enable_progress_bars = saved


def _map(ray: Any, ds: Any, plan: ActorPlan, ropts: RayOptions, gpus: float | None) -> Any:
    return ds.map_batches(
        EmbedWriter,
        fn_constructor_kwargs={"plan": plan},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ropts.actors),
        num_cpus=ropts.cpus_per_actor,
        num_gpus=gpus,
        max_restarts=-1,
        max_task_retries=ropts.retries,
    )


def _results(ray: Any, ds: Any) -> Iterator[BatchResult]:
    """The actors' results; a worker's failure (``WorkerFailure``) is raised as milvus-m3's error."""
    try:
        for row in ds.iter_rows():
            got = pickle.loads(row[RESULT])
            if isinstance(got, WorkerFailure):
                logger.info("%s failed in a Ray worker:\n%s", got.where, got.details)
                raise got.to_error()
            yield got
    except MilvusM3Error:
        raise
    except Exception as exc:
        unwrapped = _unwrap(exc)
        if unwrapped is exc:
            raise
        raise unwrapped from None


class _Tally(RunCounts):
    """The driver's side: count each batch once, keep the first record of each id, write Lite rows, log
    bad rows, build the report."""

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        opts: IngestOptions,
        ropts: RayOptions,
        sources: Sequence[str],
        errors_path: Path | None,
        started: float,
    ) -> None:
        self.manager, self.collection, self.opts, self.ropts = manager, collection, opts, ropts
        self.sources = list(sources)
        self.order = {s: i for i, s in enumerate(sources)}
        super().__init__(started)
        self.errlog = ErrorLog(errors_path, None, False)
        self.seen: set[tuple[int, int]] = set()
        self.first: dict[str | int, tuple[int, int, int]] = {}
        """Per id, the first record of it seen so far in input order: (input index, line, rows), rows 0
        for a document ``skip_existing`` passed over (stored already), -1 for one not written (another
        tenant's id)."""
        self.repeated: set[str | int] = set()
        """Ids with more than one record: their first records' rows must be the ones that stay."""

    def _key(self, err: RowError) -> tuple[int, int]:
        return self.order.get(err.file, len(self.order)), err.line

    def add(self, res: BatchResult) -> None:
        if res.key in self.seen:  # a batch retried after its first result had come back
            return
        self.seen.add(res.key)
        self.read += res.read
        self.skipped += res.skipped
        errors = list(res.errors)
        if res.aborted:
            self._bad(errors)
            first = min(res.errors, key=self._key)
            raise self._abort(first, len(res.errors), "its batch")
        later = self._later_records(res.key[0], res.docs, errors)
        rows, origins = res.rows, res.origins
        if later:
            keep = [i for i, o in enumerate(origins) if o[1] not in later]
            rows, origins = [rows[i] for i in keep], [origins[i] for i in keep]
        if rows:  # Milvus Lite: the driver writes
            rows, origins, foreign = split_foreign(self.manager, self.collection, rows, origins)
            if foreign and self.opts.on_error == "fail":  # nothing of this batch is written
                counted = [n for _, line, n in res.docs if n > 0 and line not in later]
                self.written, self.chunks = self.written - len(counted), self.chunks - sum(counted)
                self._bad([*errors, *foreign])
                raise self._abort(min(foreign, key=self._key), len(foreign), "its batch")
            rows, more = write_owned(
                self.manager, self.collection, rows, origins, self.ropts.write_batch_size
            )
            for err in [*foreign, *more]:
                errors.append(err)
                self._unwrite(res.key[0], err)
        self._bad(errors)
        self.tokens += res.tokens
        self.truncated += res.truncated

    def _later_records(
        self, index: int, docs: Sequence[tuple[str | int, int, int]], errors: list[RowError]
    ) -> set[int]:
        """Count a batch's documents, keeping the first record of each id (``ingest``'s rule): a record
        after the first is a bad row; a first record that came back after a later one makes that one a
        bad row. Returns the lines of this batch's records that are not first (their rows are not
        written)."""
        later: set[int] = set()
        source = self.sources[index]
        for doc_id, line, rows in docs:
            if rows > 0:
                self.written += 1
                self.chunks += rows
            was = self.first.get(doc_id)
            if was is None:
                self.first[doc_id] = (index, line, rows)
                continue
            self.repeated.add(doc_id)
            if was[:2] < (index, line):
                errors.append(_duplicate(source, line, doc_id, self.sources[was[0]], was[1]))
                later.add(line)
                self.written -= rows > 0
                self.chunks -= max(rows, 0)
            else:
                errors.append(_duplicate(self.sources[was[0]], was[1], doc_id, source, line))
                self.written -= was[2] > 0
                self.chunks -= max(was[2], 0)
                self.first[doc_id] = (index, line, rows)
        return later

    def _unwrite(self, index: int, err: RowError) -> None:
        """The document of ``err`` (of input ``index``) was not written after all (another tenant's id)."""
        was = self.first.get(err.id) if err.id is not None else None
        if err.id is not None and was is not None and was[:2] == (index, err.line) and was[2] > 0:
            self.written -= 1
            self.chunks -= was[2]
            self.first[err.id] = (index, err.line, -1)

    def _bad(self, errors: Sequence[RowError]) -> None:
        self.errlog.write(errors)
        self.failed += len(errors)
        self.kept = sorted([*self.kept, *errors], key=self._key)[:MAX_REPORTED_ERRORS]

    def _abort(self, first: RowError, bad: int, where: str) -> IngestAborted:
        return IngestAborted(
            f"bad row at {first.file}:{first.line}: {first.error} ({bad} bad in {where}; "
            f"on_error='fail'). Nothing of that batch was written; {self.written} documents of other "
            "batches are stored. Fix the input and run again (upserts make that safe), or use --on-error skip",
            report=self.report(),
            error=first,
        )

    def rewrite_first(self) -> list[dict[str, Any]]:
        """After every batch: the read step's items for the first records of repeated ids when actors
        wrote them (a server: a later record may have been written after the first); for Lite, where
        the driver wrote only first records, none. Extra chunks of a later record go either way."""
        self._drop_extra_chunks()
        lines: dict[int, list[int]] = {}
        for doc_id in self.repeated:
            index, line, rows = self.first[doc_id]
            if rows >= 0:  # written, or stored already (skip_existing): a later record may be over it
                lines.setdefault(index, []).append(line)
        if not lines or self._driver_writes():
            return []
        return [
            {"index": i, "source": self.sources[i], "lines": sorted(ls)} for i, ls in sorted(lines.items())
        ]

    def _driver_writes(self) -> bool:
        return self.manager.capabilities.one_process_per_file and is_local_file_uri(
            self.manager.connection.uri
        )

    def rewritten(self, res: BatchResult) -> None:
        """A batch of the second pass: its documents are counted already; a failure now is logged."""
        for err in res.errors:
            logger.warning("writing the first record of a repeated id again failed: %s", err)

    def _drop_extra_chunks(self) -> None:
        """Chunks of a later record of a repeated id beyond the first record's last chunk are deleted."""
        if not self.repeated or not self.manager.spec(self.collection).chunked:
            return
        dialect = self.manager.capabilities.filter_dialect
        parts = [  # only where the first record was written: never another tenant's rows
            f"({PARENT_FIELD} == {literal(str(doc_id), dialect=dialect)} and {CHUNK_FIELD} >= {self.first[doc_id][2]})"
            for doc_id in sorted(self.repeated, key=str)
            if self.first[doc_id][2] > 0
        ]
        for start in range(0, len(parts), 100):
            self.manager.delete(self.collection, filter=" or ".join(parts[start : start + 100]))

    def finish(self) -> IngestReport:
        path = self.errlog.path
        if path is not None and path.is_file():
            self._sort_errors(path)
        report = self.report()
        if report.failed:
            logger.warning("%d bad rows%s", report.failed, f" (see {path})" if path else "")
        return report

    def _sort_errors(self, path: Path) -> None:
        """Rewrite the errors file in input order (the actors' batches arrive in any order)."""
        lines = path.read_bytes().splitlines(keepends=True)
        keyed = sorted(lines, key=lambda b: self._key(RowError(**json.loads(b))))
        tmp = path.with_name(f".{path.name}.sorted")
        with open(tmp, "wb") as fh:
            fh.writelines(keyed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def report(self) -> IngestReport:
        errors_path = str(self.errlog.path) if self.errlog.path is not None else None
        return self.counted_report(errors_path=errors_path, state_path=None)


def _duplicate(source: str, line: int, doc_id: str | int, first_source: str, first_line: int) -> RowError:
    """The bad row of a later record of an id (``prepare.Preparer``'s words)."""
    return RowError(
        source,
        line,
        doc_id,
        "id",
        f"duplicate id (first at {first_source}:{first_line}); the first one is kept",
    )


def _expected_total(sources: Sequence[str], formats: Mapping[str, str]) -> int | None:
    """Records in all inputs, for the progress bar's total (None when any input cannot tell)."""
    from .readers import estimate_records

    total = 0
    for source in sources:
        n = estimate_records(source, formats[source])
        if n is None:
            return None
        total += n
    return total
