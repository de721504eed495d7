"""What runs inside Ray's workers for ``ray_ingest``: the read step (one input -> batches of records) and
the embedding actor (a batch -> validated rows -> upsert, or rows back to the driver for Milvus Lite).

Nothing here imports ray: these are plain functions and classes that Ray ships to its workers (the
driver side is ``ray_engine.py``). Each batch is built by the same code as ``milvus-m3 ingest``
(``readers.read_source``, ``ids.IdChoices``, ``prepare.Preparer``), so a batch of records gives the same
rows and the same bad-row reports on both paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..collection.identity import identity
from ..collection.manager import CollectionManager, CollectionSpec
from ..collection.schema import ID_FIELD, METADATA_FIELD, TEXT_FIELD
from ..engine.connection import Connection, ConnectionOptions
from ..errors import ConfigError, MilvusM3Error
from ..types import Encoder
from .ids import IdChoices
from .options import IngestOptions
from .prepare import Doc, Origin, Preparer, check_encoder, split_foreign, write_owned
from .readers import Skipped, read_source
from .records import Record, RowError

__all__: list[str] = []

PAYLOAD = "payload"
"""The column of the read step's rows: one pickled ``ReadBatch`` each."""
RESULT = "result"
"""The column of the actors' rows: one pickled ``BatchResult`` each."""


def is_remote(source: str) -> bool:
    """An object-store or other URI (``s3://``, ``gs://``, ``file://``, ...) rather than a local path."""
    return "://" in source


@dataclass(frozen=True)
class ReadBatch:
    """Up to ``batch_size`` consecutive records of one input: the unit of embedding and writing."""

    source_index: int
    number: int
    records: list[Record]
    id_choices: dict[str, str | None]


@dataclass
class BatchResult:
    """What an actor did with one batch (rows only when the driver writes them: Milvus Lite)."""

    key: tuple[int, int]
    read: int
    written_docs: int
    chunks: int
    tokens: int
    truncated: int
    skipped: int
    errors: list[RowError]
    aborted: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    """Per row of ``rows``, its document's (input, line, id)."""
    docs: list[tuple[str | int, int, int]] = field(default_factory=list)
    """(id, line, rows) of each document written (or, for Lite, to be written by the driver), and
    (id, line, 0) of each passed over by ``skip_existing``: what the driver needs to keep the first
    record of an id across batches, as ``ingest`` does."""


@dataclass(frozen=True, kw_only=True)
class ActorPlan:
    """Everything an embedding actor needs, decided once by the driver and pickled to every actor."""

    encoder: Callable[[], Encoder]
    options: IngestOptions
    spec: CollectionSpec
    collection: str
    uri: str
    connection: ConnectionOptions = field(repr=False)
    formats: Mapping[str, str]
    max_tokens: int | None
    writes_in_actors: bool
    write_batch_size: int
    skip_existing: bool


@dataclass(frozen=True)
class WorkerFailure:
    """An exception raised in a Ray worker, sent back to the driver as data in place of a batch.

    Raised in a worker, Ray would wrap it (``RayTaskError(UserCodeException)``: ANSI colours, the remote
    traceback, and Ray Data drops the original); as data it reaches the driver intact, which raises
    ``to_error()``: milvus-m3's own error when it was one of ours, else one naming the worker's error.
    """

    kind: str
    """The exception's type name."""
    message: str
    """Its message on one line, without ANSI escapes."""
    where: str
    """What the worker was doing ("reading docs.jsonl", "embedding a batch of docs.jsonl")."""
    error: bytes | None
    """The milvus-m3 error itself, pickled, when it is one and survives a pickle round trip."""
    details: str
    """The worker's traceback, for the driver's log (``-v``), never for the error's message."""
    ours: bool = False
    """A milvus-m3 error (its message says the fix)."""

    @classmethod
    def of(cls, exc: Exception, where: str) -> WorkerFailure:
        error: bytes | None = None
        if isinstance(exc, MilvusM3Error):
            try:
                error = pickle.dumps(exc, protocol=5)
                pickle.loads(error)  # an error whose __init__ needs more than its message cannot come back
            except Exception:
                error = None
        details = "".join(traceback.format_exception(exc))
        ours = isinstance(exc, MilvusM3Error)
        return cls(type(exc).__name__, one_line(str(exc)), where, error, details, ours)

    def to_error(self) -> MilvusM3Error:
        """The error the driver raises (never a Ray error)."""
        if self.error is not None:
            got = pickle.loads(self.error)
            if isinstance(got, MilvusM3Error):
                return got
        if self.ours:
            return MilvusM3Error(self.message)
        return MilvusM3Error(
            f"{self.where} failed in a Ray worker: {self.kind}: {self.message} (not an error milvus-m3 "
            "expected; -v logs the worker's traceback)"
        )


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line(text: str) -> str:
    """``text`` without ANSI escape sequences, its whitespace runs (newlines too) as one space."""
    return " ".join(_ANSI.sub("", text).split())


# ---------------------------------------------------------------------------------------- read step


def _local_copy(uri: str, directory: str) -> str:
    """Download ``uri`` through pyarrow's filesystems (the ones Ray reads with) into ``directory``."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    target = os.path.join(directory, "input" + "".join(os.path.splitext(path)[1:]))
    with filesystem.open_input_stream(path) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def read_batches(
    row: Mapping[str, Any], *, options: IngestOptions, formats: Mapping[str, str]
) -> Iterator[dict[str, bytes]]:
    """The read step (a Ray ``flat_map``): the records of one input in batches of ``batch_size``.

    The id field of an input is chosen from its first readable record, as ``ingest`` chooses it; a
    remote input is copied to a local temporary file first and its records keep the URI as their source.
    With ``row["lines"]`` only the records starting on those lines are emitted (the driver's second pass
    over the first records of repeated ids).
    """
    index, source = int(row["index"]), str(row["source"])
    try:
        yield from _read_batches(index, source, row, options, formats)
    except Exception as exc:  # to the driver as data (WorkerFailure): Ray would bury it in its own error
        yield {PAYLOAD: pickle.dumps(WorkerFailure.of(exc, f"reading {source}"), protocol=5)}


def _read_batches(
    index: int, source: str, row: Mapping[str, Any], options: IngestOptions, formats: Mapping[str, str]
) -> Iterator[dict[str, bytes]]:
    only = set(row["lines"]) if row.get("lines") is not None else None
    kind = formats[source]
    ids = IdChoices(id_field=options.id_field, hash_ids=options.hash_ids, formats=formats, known={})
    with tempfile.TemporaryDirectory(prefix="milvus-m3-ray-") as tmp:
        path = _local_copy(source, tmp) if is_remote(source) else source

        def emit(number: int, records: list[Record]) -> dict[str, bytes]:
            known = {source: ids.chosen[source]} if source in ids.chosen else {}
            return {PAYLOAD: pickle.dumps(ReadBatch(index, number, records, known), protocol=5)}

        batch: list[Record] = []
        number = 0
        for rec in read_source(path, kind, 0, Skipped()):
            if source not in ids.chosen and rec.data is not None:
                ids.field_for(source, rec.data)
            if only is not None and rec.line not in only:
                continue
            batch.append(rec if path == source else dataclasses.replace(rec, source=source))
            if len(batch) >= options.batch_size:
                yield emit(number, batch)
                batch, number = [], number + 1
        if batch:
            yield emit(number, batch)


# ------------------------------------------------------------------------------------------ actors


class _DriverWritesOnly:
    """The client of an actor's manager for Milvus Lite: it validates rows but never opens the file."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise ConfigError(
            f"a Ray actor tried to {name} the Milvus Lite file {self.uri}; one process at a time may open "
            "it, so ray_ingest writes Milvus Lite from the driver only. Use a Milvus server for parallel writes"
        )


def probe_encoder(
    encoder: Callable[[], Encoder], options: IngestOptions
) -> tuple[dict[str, Any], int | None]:
    """(identity: dense dim, model name and fingerprint as ``check_collection`` keywords; document max
    tokens) of the encoder the actors will build (a Ray task with an actor's resources, so that the
    driver never loads the model)."""
    enc = encoder()
    return identity(enc), check_encoder(options, enc)


class EmbedWriter:
    """The embedding actor: builds the encoder once, then prepares and writes batch after batch."""

    def __init__(self, plan: ActorPlan) -> None:
        self.plan = plan
        self.failure: WorkerFailure | None = None
        """Building the encoder or the manager failed: every batch's result is this failure."""
        try:
            self.encoder = plan.encoder()
            if plan.writes_in_actors:
                self.manager = CollectionManager(plan.uri, options=plan.connection)
            else:
                offline = Connection(plan.uri, plan.connection, client=_DriverWritesOnly(plan.uri))
                self.manager = CollectionManager(connection=offline)
        except Exception as exc:
            self.failure = WorkerFailure.of(exc, "starting an embedding actor")

    def __call__(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, Any]:
        out = [pickle.dumps(self.result(pickle.loads(p)), protocol=5) for p in batch[PAYLOAD]]
        return {RESULT: np.array(out, dtype=object)}

    def result(self, item: ReadBatch | WorkerFailure) -> BatchResult | WorkerFailure:
        """A batch's result, or the failure of the read step, of this actor, or of this batch: raised
        here, Ray would wrap it in its own error (see ``WorkerFailure``)."""
        if isinstance(item, WorkerFailure):
            return item
        if self.failure is not None:
            return self.failure
        try:
            return self.run(item)
        except Exception as exc:
            where = item.records[0].source if item.records else f"input {item.source_index + 1}"
            return WorkerFailure.of(exc, f"embedding a batch of {where}")

    def run(self, rb: ReadBatch) -> BatchResult:
        plan = self.plan
        ids = IdChoices(
            id_field=plan.options.id_field,
            hash_ids=plan.options.hash_ids,
            formats=plan.formats,
            known=rb.id_choices,
        )
        preparer = Preparer(
            plan.options,
            plan.spec,
            self.manager,
            self.encoder,
            ids=ids,
            formats=plan.formats,
            max_tokens=plan.max_tokens,
        )
        records, passed = rb.records, list[tuple[str | int, int]]()
        if plan.skip_existing:
            records, passed = self._drop_stored(preparer, records)
        prepared = preparer.prepare(records, 0) if records else None
        errors = list(prepared.errors) if prepared is not None else []
        rows = prepared.rows if prepared is not None else []
        origins = prepared.origins if prepared is not None else []
        if plan.writes_in_actors:  # a document whose id is another tenant's is a bad row (prepare.py)
            rows, origins, foreign = split_foreign(self.manager, plan.collection, rows, origins)
            errors.extend(foreign)
        aborted = bool(errors) and plan.options.on_error == "fail"
        if rows and not aborted and plan.writes_in_actors:
            rows, foreign = write_owned(self.manager, plan.collection, rows, origins, plan.write_batch_size)
            errors.extend(foreign)
            origins = [o for o in origins if (o[0], o[1]) not in {(e.file, e.line) for e in foreign}]
        order = {(r.source, r.line): k for k, r in enumerate(rb.records)}
        errors.sort(key=lambda e: order.get((e.file, e.line), 0))
        docs = docs_of(origins) if not aborted else []
        return BatchResult(
            key=(rb.source_index, rb.number),
            read=len(rb.records),
            written_docs=len(docs),
            chunks=len(rows) if not aborted else 0,
            tokens=prepared.tokens if prepared is not None else 0,
            truncated=prepared.truncated if prepared is not None else 0,
            skipped=len(passed),
            errors=errors,
            aborted=aborted,
            rows=[] if plan.writes_in_actors or aborted else rows,
            origins=[] if plan.writes_in_actors or aborted else origins,
            docs=[*docs, *((doc_id, line, 0) for doc_id, line in passed)],
        )

    def _drop_stored(
        self, preparer: Preparer, records: list[Record]
    ) -> tuple[list[Record], list[tuple[str | int, int]]]:
        """(the records to embed, (id, line) of those passed over): all but valid documents whose id
        occurs once in the batch and whose stored row has the same text, metadata and declared fields
        (so its vectors are the ones the model would give again). Anything else is embedded and
        upserted, which is always safe."""
        docs: list[tuple[Record, Doc]] = []
        counts: dict[str | int, int] = {}
        for rec in records:
            got = preparer.to_doc(rec)
            if isinstance(got, Doc):
                docs.append((rec, got))
                counts[got.id] = counts.get(got.id, 0) + 1
        unique = [doc for _, doc in docs if counts[doc.id] == 1]
        if not unique:
            return records, []
        stored = {r[ID_FIELD]: r for r in self.manager.get(self.plan.collection, [d.id for d in unique])}
        same = {id(rec): doc for rec, doc in docs if counts[doc.id] == 1 and _same(stored.get(doc.id), doc)}
        return [r for r in records if id(r) not in same], [(doc.id, doc.line) for doc in same.values()]


def docs_of(origins: Sequence[Origin]) -> list[tuple[str | int, int, int]]:
    """(id, line, rows) per document of a batch's rows, in order."""
    counts: dict[tuple[str | int, int], int] = {}
    for _, line, doc_id in origins:
        counts[(doc_id, line)] = counts.get((doc_id, line), 0) + 1
    return [(doc_id, line, n) for (doc_id, line), n in counts.items()]


def _same(row: Mapping[str, Any] | None, doc: Doc) -> bool:
    if row is None or row.get(TEXT_FIELD) != doc.text:
        return False
    if _plain_json(row.get(METADATA_FIELD) or {}) != _plain_json(doc.metadata):
        return False
    return all(row.get(name) == value for name, value in doc.fields.items())


def _plain_json(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return object()  # never equal: such a document is embedded again
