"""``ingest()``: the threaded pipeline that reads, prepares, upserts and checkpoints batch after batch.

Idempotence
    Rows are only ever upserted, keyed by id, so running the same input twice leaves the collection as
    it was. A batch written but not yet checkpointed is written again on resume, which upserts cannot
    duplicate. A bad row never costs its neighbours: the rest of its batch is written. With
    ``on_error="fail"`` the job stops with ``IngestAborted`` before writing the batch that holds the
    first bad row; earlier batches stay.

Overlap
    A producer thread reads, validates, embeds and builds rows for batch ``n + 1`` while the calling
    thread upserts batch ``n`` and checkpoints it; a queue of two batches bounds memory. An exception
    in either side stops both and is raised by ``ingest``; Ctrl-C stops at once and leaves the last
    checkpoint in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..collection.identity import identity
from ..collection.manager import CollectionManager, CollectionSpec
from ..collection.schema import CHUNK_FIELD, ID_FIELD, PARENT_FIELD
from ..engine.uri import is_local_file_uri
from ..errors import ConfigError, IngestAborted, InputError, MilvusM3Error
from ..filters import literal
from ..types import Encoder
from .checkpoint import Checkpoint, ErrorLog, source_key
from .guard import JobLock, check_paths
from .ids import IdChoices
from .options import IngestOptions, build_options
from .prepare import Batch, Preparer, check_encoder, split_foreign, write_owned
from .readers import STDIN, Skipped, detect_format, estimate_records, read_source, require_pyarrow
from .records import MAX_REPORTED_ERRORS, IngestReport, Record, RowError, RunCounts

__all__ = ["QUEUE_BATCHES", "ingest"]

logger = logging.getLogger("milvus_m3.ingest")

QUEUE_BATCHES = 2
"""Prepared batches waiting for the writer: bounds memory while letting writes hide behind encoding."""


def ingest(
    files: Sequence[str | os.PathLike[str]],
    *,
    manager: CollectionManager,
    collection: str,
    encoder: Encoder,
    options: IngestOptions | None = None,
    errors_path: str | os.PathLike[str] | None = None,
    state_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    on_batch: Callable[[IngestReport], None] | None = None,
    force_resume: bool = False,
    **option_kwargs: Any,
) -> IngestReport:
    """Embed and upsert the records of ``files`` into ``collection`` (which must exist; see the package
    documentation for formats, ids, chunking, bad rows, resume and overlap).

    options / option_kwargs: how records become rows, as an ``IngestOptions`` and/or its fields as
        keywords (``format``, ``id_field``, ``hash_ids``, ``text_field``, ``title_field``,
        ``metadata_fields``, ``batch_size``, ``on_error``, ``chunk_tokens``, ``chunk_overlap``,
        ``truncate``); a keyword overrides the same field of ``options``; an unknown one is a ConfigError.
    errors_path: JSON-lines file for bad rows (None: only counted, and the first few kept in the report).
    state_path: checkpoint file (None: no checkpoints; ``resume`` then needs one). Neither may be an
        input, the Lite database, the other one, or an existing file of another kind; each is held
        against other jobs while this one runs (``guard.py``).
    force_resume: resume even from inputs whose size or mtime changed since the checkpoint (lines only
        appended); without it such a resume is refused.
    progress: a tqdm bar on stderr with docs/s; None shows it when stderr is a terminal.
    on_batch: called in the calling thread after each batch is written and checkpointed, with the
        report so far (for progress reporting of callers that do their own).
    """
    started = time.perf_counter()
    sources = _check_sources(files)
    opts = build_options(options, option_kwargs)
    if resume and state_path is None:
        raise ConfigError("resume=True needs state_path (the checkpoint file of the earlier run)")
    state = Path(state_path) if state_path is not None else None
    errors = Path(errors_path) if errors_path is not None else None
    conn = manager.connection
    check_paths(sources, state, errors, conn.uri if is_local_file_uri(conn.uri) else None, resume)
    max_tokens = check_encoder(opts, encoder)
    spec = _check_collection(manager, collection, encoder, opts)
    formats = {s: detect_format(s, opts.format) for s in sources}
    for s, kind in formats.items():
        if kind == "parquet":
            require_pyarrow(s)
    with JobLock().holding(state, errors):
        target = {
            "uri": conn.display_uri,
            "db_name": conn.db_name,
            "collection": collection,
            "build_id": manager.build_id(collection),
            "collection_id": manager.collection_id(collection),
        }
        checkpoint = Checkpoint(state, opts.resume_options(collection), resume, target, force_resume)
        if checkpoint.resumed and not _holds(manager, collection, checkpoint.probe):
            checkpoint.start_over(
                f"collection {collection!r} does not hold row {checkpoint.probe!r}, the last one the checkpoint "
                "covers (it was dropped and recreated, or rows were deleted)"
            )
        checkpoint.begin(sources)
        if not checkpoint.resumed:
            checkpoint.commit({}, {}, 0)  # a stale state file of another run must not be resumed from
        errlog = ErrorLog(errors, checkpoint.errors_offset, checkpoint.resumed)
        ids = IdChoices(
            id_field=opts.id_field,
            hash_ids=opts.hash_ids,
            formats=formats,
            known=checkpoint.id_choices(sources),
        )
        preparer = Preparer(opts, spec, manager, encoder, ids=ids, formats=formats, max_tokens=max_tokens)
        producer = _Producer(sources, formats, checkpoint, preparer, opts.batch_size)
        writer = _Writer(manager, collection, opts.on_error, checkpoint, errlog, started, on_batch)
        bar = progress_bar(progress, collection, lambda: _expected_records(formats, checkpoint))
        _run(producer, writer, ids, bar)
        result = writer.report()
    if result.failed:
        logger.warning(
            "%d bad rows%s", result.failed, f" (see {result.errors_path})" if result.errors_path else ""
        )
    return result


def _holds(manager: CollectionManager, collection: str, row_id: str | int | None) -> bool:
    """Whether ``collection`` holds the row ``row_id`` (True when there is none to look for)."""
    if row_id is None:
        return True
    try:
        return bool(manager.get(collection, [row_id], output_fields=[ID_FIELD]))
    except InputError:  # an id this collection cannot hold (another id type): not the collection written
        return False


def _check_sources(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The inputs as strings: a non-empty list of distinct existing files (``-`` for stdin)."""
    if isinstance(files, (str, os.PathLike)):
        raise ConfigError("files must be a list of paths ('-' for stdin), not one path; wrap it: [path]")
    sources = [os.fspath(f) for f in files]
    if not sources:
        raise ConfigError("files must be a non-empty list of paths ('-' for stdin)")
    seen: set[str] = set()
    for s in sources:
        key = source_key(s)
        if key in seen:
            raise ConfigError(f"input {s} is given twice; give each input once")
        seen.add(key)
        if s != STDIN and not os.path.isfile(s):
            raise ConfigError(f"input file {s} does not exist or is not a file")
    return sources


def _check_collection(
    manager: CollectionManager, collection: str, encoder: Encoder, opts: IngestOptions
) -> CollectionSpec:
    """The collection's spec, once it is known to take upserts by id (and chunks, when asked for)."""
    check_spec(manager.check_collection(collection, **identity(encoder)), collection, opts)
    return manager.check_collection(collection, **identity(encoder), record_model=True)  # records its model


def check_spec(spec: CollectionSpec, collection: str, opts: IngestOptions) -> None:
    """ConfigError unless the collection takes upserts by id (and chunks, when ``opts`` asks for them)."""
    if spec.auto_id:
        raise ConfigError(
            f"collection {collection!r} uses auto_id; ingestion upserts by id so that re-runs and resumes "
            "cannot duplicate documents. Create the collection without auto_id"
        )
    if spec.chunked and spec.id_type != "varchar":
        raise ConfigError(
            f"collection {collection!r} is chunked with int64 ids; chunk ids ('P#i') need varchar ids"
        )
    if opts.chunk_tokens is not None and not spec.chunked:
        raise ConfigError(
            f"chunk_tokens needs a chunked collection, and {collection!r} is not one; create it with "
            "CollectionSpec(chunked=True) (milvus-m3 create --chunked)"
        )
    if opts.tenant_field is not None and spec.partition_key is None:
        raise ConfigError(
            f"tenant_field={opts.tenant_field!r} needs a collection with a tenant field, and {collection!r} has "
            "none; create it with CollectionSpec(partition_key='tenant') (milvus-m3 create --partition-key tenant)"
        )


def _run(producer: _Producer, writer: _Writer, ids: IdChoices, bar: Any) -> None:
    """Write batches as the producer hands them over, until the end or the first exception of either."""
    producer.start()
    finished = False
    try:
        while True:
            item = producer.get()
            if isinstance(item, _End):
                writer.skipped = item.skipped
                break
            writer.write(item)
            if bar is not None:
                bar.update(item.read)
                bar.set_postfix(written=writer.written, failed=writer.failed, refresh=False)
            writer.notify()
        writer.finish(ids.chosen)
        finished = True
        if bar is not None and bar.total is not None and bar.n != bar.total:
            bar.total = bar.n  # the total was an estimate: a finished job ends at 100%
            bar.refresh()
    finally:
        producer.close(finished)
        if bar is not None:
            bar.close()


# -------------------------------------------------------------------------------------------- producer


@dataclass
class _End:
    skipped: int


@dataclass
class _Failure:
    exc: BaseException


_Item = Batch | _End | _Failure


def _batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Producer:
    """The producer thread: reads, validates, embeds and builds rows, one batch ahead of the writer."""

    def __init__(
        self,
        sources: Sequence[str],
        formats: dict[str, str],
        checkpoint: Checkpoint,
        preparer: Preparer,
        batch_size: int,
    ) -> None:
        self.sources = sources
        self.formats = formats
        self.checkpoint = checkpoint
        self.preparer = preparer
        self.batch_size = batch_size
        self.skipped = 0
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="milvus-m3-ingest-producer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def get(self) -> Batch | _End:
        """The next prepared batch (or the end); an exception of the producer is raised here."""
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    raise MilvusM3Error("the ingest producer thread stopped without a result") from None
                continue
            if isinstance(item, _Failure):
                raise item.exc
            return item

    def close(self, finished: bool) -> None:
        """Stop the producer, drop what it queued, and wait for it (briefly, after a failure)."""
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.thread.join(timeout=None if finished else 2.0)

    def _put(self, item: _Item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _records(self) -> Iterator[Record]:
        for s in self.sources:
            done = self.checkpoint.done(s) if self.checkpoint.resumed else 0
            box = Skipped(self.checkpoint.digest(s) if done else None, self.checkpoint.force)
            base = self.skipped
            for rec in read_source(s, self.formats[s], done, box):
                self.skipped = base + box.count
                yield rec
            self.skipped = base + box.count

    def _produce(self) -> None:
        try:
            for batch in _batched(self._records(), self.batch_size):
                if self.stop.is_set():
                    return
                prepared = self.preparer.prepare(batch, self.skipped)
                if not self._put(prepared):
                    return
            self._put(_End(self.skipped))
        except BaseException as exc:
            self._put(_Failure(exc))


# ---------------------------------------------------------------------------------------------- writer


class _Writer(RunCounts):
    """The calling thread's side: upsert a batch, log its bad rows, checkpoint it, count it."""

    def __init__(
        self,
        manager: CollectionManager,
        collection: str,
        on_error: str,
        checkpoint: Checkpoint,
        errlog: ErrorLog,
        started: float,
        on_batch: Callable[[IngestReport], None] | None,
    ) -> None:
        self.manager = manager
        self.collection = collection
        self.on_error = on_error
        self.checkpoint = checkpoint
        super().__init__(started)
        self.errlog = errlog
        self.on_batch = on_batch

    def write(self, item: Batch) -> None:
        self.skipped = item.skipped
        self.read += item.read
        rows, origins, foreign = split_foreign(self.manager, self.collection, item.rows, item.origins)
        self._set_aside(item, rows, foreign)
        if item.errors and self.on_error == "fail":
            raise self._abort(item)
        if item.rows:
            rows, foreign = write_owned(self.manager, self.collection, item.rows, origins)
            self._set_aside(item, rows, foreign)
            self._drop_stale_chunks(item.rows)
        self.errlog.write(item.errors)
        probe = item.rows[-1][ID_FIELD] if item.rows else None
        self.checkpoint.commit(
            item.positions, item.id_choices, self._errors_offset(), digests=item.digests, probe=probe
        )
        self.written += item.written_docs
        self.chunks += len(item.rows)
        self.failed += len(item.errors)
        self.tokens += item.tokens
        self.truncated += item.truncated
        self._keep(item.errors)
        for err in item.errors:
            logger.debug("bad row %s", err)

    @staticmethod
    def _set_aside(item: Batch, rows: list[dict[str, Any]], foreign: Sequence[RowError]) -> None:
        """``item`` with only ``rows`` left and the documents of ``foreign`` (another tenant's ids) as
        bad rows, in input order."""
        if not foreign:
            return
        order = {s: i for i, s in enumerate(item.positions)}
        item.errors = sorted([*item.errors, *foreign], key=lambda e: (order.get(e.file, len(order)), e.line))
        item.rows = rows
        item.written_docs -= len(foreign)

    def _drop_stale_chunks(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """A document written again with fewer chunks: its old chunks past the new last one are deleted
        (after the upsert, before the checkpoint, so a crash in between is repaired on resume)."""
        counts: dict[str, int] = {}
        for row in rows:
            if PARENT_FIELD in row:
                parent = row[PARENT_FIELD]
                counts[parent] = max(counts.get(parent, 0), int(row[CHUNK_FIELD]) + 1)
        if not counts:
            return
        dialect = self.manager.capabilities.filter_dialect
        expr = " or ".join(
            f"({PARENT_FIELD} == {literal(p, dialect=dialect)} and {CHUNK_FIELD} >= {n})"
            for p, n in counts.items()
        )
        self.manager.delete(self.collection, filter=expr)

    def notify(self) -> None:
        if self.on_batch is not None:
            self.on_batch(self.report())

    def finish(self, id_choices: dict[str, str | None]) -> None:
        self.checkpoint.commit({}, id_choices, self._errors_offset(), finished=True)

    def _errors_offset(self) -> int | None:
        return self.errlog.offset if self.errlog.path else None

    def _abort(self, item: Batch) -> IngestAborted:
        self.errlog.write(item.errors)
        self.failed += len(item.errors)
        self._keep(item.errors)
        first = item.errors[0]
        return IngestAborted(
            f"bad row at {first.file}:{first.line}: {first.error} ({len(item.errors)} bad in the batch "
            f"starting at {item.first[0]}:{item.first[1]}; on_error='fail'). Nothing of that batch was "
            f"written; {self.written} documents from earlier batches are stored. Fix the input and "
            "rerun with --resume, or use --on-error skip",
            report=self.report(),
            error=first,
        )

    def _keep(self, errors: Sequence[RowError]) -> None:
        room = MAX_REPORTED_ERRORS - len(self.kept)
        if room > 0:
            self.kept.extend(errors[:room])

    def report(self) -> IngestReport:
        return self.counted_report(
            errors_path=str(self.errlog.path) if self.errlog.path is not None else None,
            state_path=str(self.checkpoint.path) if self.checkpoint.path is not None else None,
        )


def _expected_records(formats: dict[str, str], checkpoint: Checkpoint) -> int | None:
    """Records this run will read, estimated (``readers.estimate_records``), less those a resume passes
    over; None when an input's size is unknown (stdin, gzip)."""
    total = 0
    for source, kind in formats.items():
        n = estimate_records(source, kind)
        if n is None:
            return None
        total += max(0, n - (checkpoint.done(source) if checkpoint.resumed else 0))
    return total


def progress_bar(progress: bool | None, collection: str, total: Callable[[], int | None]) -> Any:
    """A tqdm bar on stderr; with a total (and so an ETA) when the inputs' sizes tell one."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        desc=f"ingest {collection}",
        unit="doc",
        total=total(),
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
