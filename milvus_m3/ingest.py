"""Streaming batch ingestion: readers, batching, ids, upserts, checkpoints, progress.

``ingest(files, manager=..., collection=..., encoder=...)`` fills a collection from files that may hold
millions of rows, with memory bounded by the batch size:

Inputs
    JSONL (``.jsonl``, ``.ndjson``, ``.json``), CSV (``.csv``), TSV (``.tsv``, ``.tab``), Parquet
    (``.parquet``, ``.pq``; needs the ``parquet`` extra: ``pip install 'milvus-m3[parquet]'``) and BEIR
    corpora (a file named ``corpus.jsonl``, or ``format="beir"``: ``_id``, ``title``, ``text``). ``-``
    reads standard input. Gzip is recognised by its magic bytes, whatever the file is called. Files are
    read record by record (Parquet in row groups of at most 1,024 rows); none is loaded whole.

Text
    ``text_field`` (default ``text``). With ``title_field`` (BEIR: ``title``) the embedded and stored
    text is ``f"{title} {text}"``, as FlagEmbedding's and BEIR's evaluation code join them, and the
    title is also kept in the metadata under ``title_field``.

Ids
    ``id_field`` names the id column. ``None`` (the default) picks, per file, ``id`` or else ``_id``
    when the file's first record has one, and content hashes otherwise; the choice is recorded in the
    checkpoint so that a resumed run makes the same one. ``hash_ids=True`` always hashes. A content
    hash is ``blake2b(text as UTF-8, digest_size=16).hexdigest()`` of the text as embedded (32 hex
    characters); for an int64-id collection, the first 8 digest bytes as a big-endian signed int.

Chunking
    With ``chunk_tokens`` each document is cut into windows of at most that many tokens overlapping
    by ``chunk_overlap`` tokens (``encoder.chunk_spans``); chunk ``i`` of document ``P`` is stored
    with id ``"P#i"``, ``parent_id`` P and ``chunk_index`` i, in a collection created with
    ``chunked=True``. Every document written to a chunked collection is stored this way (one chunk
    when ``chunk_tokens`` is None). Changing ``chunk_tokens`` on a filled collection leaves the old
    chunks beyond the new count in place: recreate the collection for that.

Bad rows
    Malformed JSON, wrong CSV field counts, invalid UTF-8, a missing id or text, empty or non-string
    text, NUL bytes, a duplicate id within a batch, text beyond the encoder's document max length (when
    not chunking and not ``truncate``) and anything ``CollectionManager.prepare_rows`` refuses for one
    row are bad rows: each is written to ``errors_path`` as one JSON line
    ``{"file", "line", "id", "field", "error"}`` (``line`` is the 1-based line where the record starts;
    for Parquet, the 1-based row) and counted in ``IngestReport.failed``. A bad row never costs its
    neighbours: the rest of its batch is written. With ``on_error="fail"`` the job stops with
    ``IngestAborted`` before writing the batch that holds the first bad row; earlier batches stay.

Idempotence and resume
    Rows are only ever upserted, keyed by id, so running the same input twice leaves the collection as
    it was. With ``state_path`` the job writes a checkpoint after each batch's upsert has returned
    (write to a temporary file, fsync, ``os.replace``, fsync the directory): per input file, how many
    records are settled (written or reported bad), plus the errors file's length at that point.
    ``resume=True`` skips the settled records and cuts the errors file back to the recorded length, so
    that after ``kill -9`` at any moment the job finishes with exactly the input's documents stored. A
    batch written but not yet checkpointed is written again, which upserts cannot duplicate. A resume
    with no checkpoint file starts from the beginning. Resume trusts that the first records of each
    file are the ones an earlier run saw (a change in size or mtime is logged).

Overlap
    A producer thread reads, validates, embeds and builds rows for batch ``n + 1`` while the calling
    thread upserts batch ``n`` and checkpoints it; a queue of two batches bounds memory. An exception
    in either side stops both and is raised by ``ingest``; Ctrl-C stops at once and leaves the last
    checkpoint in place.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import decimal
import gzip
import hashlib
import io
import json
import logging
import os
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from .collection import CollectionManager, CollectionSpec, ScalarField
from .errors import ConfigError, IngestAborted, InputError, MilvusM3Error, MissingDependencyError
from .types import Encoder, M3Embeddings

__all__ = [
    "FORMATS",
    "IngestAborted",
    "IngestReport",
    "Record",
    "RowError",
    "content_id",
    "default_state_path",
    "detect_format",
    "ingest",
    "read_records",
]

logger = logging.getLogger("milvus_m3.ingest")
logger.addHandler(logging.NullHandler())

Format = Literal["auto", "jsonl", "csv", "tsv", "parquet", "beir"]
FORMATS: tuple[str, ...] = ("auto", "jsonl", "csv", "tsv", "parquet", "beir")
ON_ERROR = ("skip", "fail")
STATE_VERSION = 1
QUEUE_BATCHES = 2
"""Prepared batches waiting for the writer: bounds memory while letting writes hide behind encoding."""
MAX_REPORTED_ERRORS = 20
"""Bad rows kept in ``IngestReport.errors`` (all of them go to the errors file)."""
PARQUET_BATCH_ROWS = 1024
_CSV_FIELD_LIMIT = 2**31 - 1
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
STDIN = "-"


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Record:
    """One record as read from an input, before any validation of its fields."""

    source: str
    """The input as given (``-`` for stdin)."""
    line: int
    """1-based line where the record starts (JSONL, CSV, TSV), or 1-based row (Parquet)."""
    index: int
    """0-based position among the input's records (blank lines are not records); what resume counts."""
    data: Mapping[str, Any] | None
    """The fields, or None when the record could not be read (see ``error``)."""
    error: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class RowError:
    """A bad row, as written to the errors file."""

    file: str
    line: int
    id: str | int | None
    field: str | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        what = f" id={self.id!r}" if self.id is not None else ""
        fld = f" [{self.field}]" if self.field else ""
        return f"{where}{what}{fld}: {self.error}"


@dataclass(frozen=True)
class IngestReport:
    """What an ingestion run did.

    read:      records read in this run (good and bad; not those passed over by resume).
    written:   documents whose rows were all upserted in this run.
    skipped:   records passed over because an earlier run had settled them (``resume=True``).
    failed:    bad records, each one line of the errors file.
    chunks:    rows upserted (equal to ``written`` unless documents were chunked).
    truncated: documents embedded after being cut to the max length (``truncate=True`` only).
    tokens:    tokens embedded (with ``<s>``/``</s>``, after truncation) when the encoder reports them.
    docs_per_s, tokens_per_s: ``written`` and ``tokens`` over ``elapsed_s`` (wall time of the run).
    errors:    the first bad rows (at most ``MAX_REPORTED_ERRORS``); all of them are in ``errors_path``.
    """

    read: int
    written: int
    skipped: int
    failed: int
    chunks: int
    elapsed_s: float
    docs_per_s: float
    tokens_per_s: float
    truncated: int
    errors_path: str | None
    tokens: int = 0
    state_path: str | None = None
    errors: tuple[RowError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [e.to_json() for e in self.errors]
        return data

    def summary(self) -> str:
        """A few human lines: counts, speed, where the bad rows are."""
        lines = [
            (
                f"read {self.read}, written {self.written} ({self.chunks} rows), skipped {self.skipped} (resume), "
                f"failed {self.failed}, truncated {self.truncated}"
            ),
            f"elapsed {self.elapsed_s:.1f} s, {self.docs_per_s:.1f} docs/s, {self.tokens_per_s:.0f} tokens/s",
        ]
        if self.failed:
            lines.append(f"bad rows ({self.failed}" + (f", all in {self.errors_path}):" if self.errors_path else "):"))
            lines.extend(f"  {e}" for e in self.errors[:5])
            if self.failed > 5:
                lines.append(f"  ... {self.failed - 5} more")
        return "\n".join(lines)


@runtime_checkable
class _Chunker(Protocol):
    def chunk_spans(self, text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]: ...


# --------------------------------------------------------------------------------------------- readers


def detect_format(path: str, format: str = "auto") -> str:
    """The format of ``path``: the one given, else from the name (a ``.gz`` suffix is looked through),
    else from the first bytes (``{`` JSONL, ``PAR1`` Parquet). ``-`` is sniffed when it is read."""
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if format != "auto" or path == STDIN:
        return format
    name = Path(path).name.lower()
    name = name.removesuffix(".gz")
    if name == "corpus.jsonl":
        return "beir"
    kind = _EXTENSIONS.get(Path(name).suffix)
    if kind is not None:
        return kind
    with open(path, "rb") as fh:
        head = fh.read(2)
        if head == _GZIP_MAGIC:
            fh.seek(0)
            with gzip.GzipFile(fileobj=fh) as gz:
                head = gz.read(512)
        else:
            head += fh.read(510)
    return _sniff(head, path)


def _sniff(head: bytes, path: str) -> str:
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    raise ConfigError(
        f"cannot tell the format of {path}; name it .jsonl/.csv/.tsv/.parquet or pass format= (--format)"
    )


def read_records(path: str, *, format: str = "auto", skip: int = 0) -> Iterator[Record]:
    """Records of one input, in order, streamed. The first ``skip`` records are passed over without
    being parsed where the format allows (JSONL lines are only counted)."""
    return _read(path, detect_format(path, format), skip, _Skipped())


class _Skipped:
    """How many records a reader passed over (set as it reads)."""

    def __init__(self) -> None:
        self.count = 0


def _read(path: str, kind: str, skip: int, skipped: _Skipped) -> Iterator[Record]:
    if kind == "parquet":
        if path == STDIN:
            raise ConfigError("Parquet cannot be read from stdin (its index is at the end of the file); pass the file")
        yield from _read_parquet(path, skip, skipped)
        return
    with _open_text_source(path) as stream:
        if kind == "auto":
            kind = _sniff(stream.peek(512)[:512], "stdin")
            if kind == "parquet":
                raise ConfigError("Parquet cannot be read from stdin (its index is at the end of the file); pass the file")
        if kind in ("jsonl", "beir"):
            yield from _read_jsonl(stream, path, skip, skipped)
        elif kind in ("csv", "tsv"):
            yield from _read_csv(stream, path, skip, skipped, "excel-tab" if kind == "tsv" else "excel")
        else:  # pragma: no cover - detect_format checks
            raise ConfigError(f"unknown format {kind!r}")


@contextlib.contextmanager
def _open_text_source(path: str) -> Iterator[io.BufferedReader]:
    """A peekable binary stream over a file or stdin, gunzipped when it starts with the gzip magic."""
    own = path != STDIN
    raw: Any = open(path, "rb") if own else sys.stdin.buffer  # noqa: SIM115 - closed below
    try:
        buffered: io.BufferedReader = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            gz: Any = gzip.GzipFile(fileobj=buffered, mode="rb")
            if gz.peek(4)[:4].startswith(_PARQUET_MAGIC):
                raise ConfigError(f"{path}: a gzipped Parquet file cannot be streamed; gunzip it first")
            stream = io.BufferedReader(gz, buffer_size=1 << 16)
            _refuse_utf16(stream, path)
            yield stream
        else:
            _refuse_utf16(buffered, path)
            yield buffered
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: the gzip stream is corrupt or cut short ({exc}); re-create the file") from exc
    finally:
        if own:
            raw.close()


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _refuse_utf16(stream: io.BufferedReader, path: str) -> None:
    """A UTF-16 file would give a 'malformed' error on every line: name the real problem once."""
    head = stream.peek(2)[:2]
    if head in _UTF16_BOMS:
        raise InputError(
            f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-encode it as UTF-8 "
            "(iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8)",
            field="file",
        )


def _read_jsonl(stream: io.BufferedReader, source: str, skip: int, skipped: _Skipped) -> Iterator[Record]:
    index = 0
    for lineno, raw in enumerate(stream, 1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        if index < skip:
            index += 1
            skipped.count = index
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Record(source, lineno, index, None, f"invalid UTF-8 at byte {exc.start} of the line")
            index += 1
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            col = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            yield Record(source, lineno, index, None, f"malformed JSON: {msg}{col}")
        else:
            if isinstance(obj, dict):
                yield Record(source, lineno, index, obj)
            else:
                yield Record(source, lineno, index, None, f"expected a JSON object, got {_json_type(obj)}")
        index += 1


def _read_csv(stream: io.BufferedReader, source: str, skip: int, skipped: _Skipped, dialect: str) -> Iterator[Record]:
    # Invalid UTF-8 is kept as lone surrogates and reported per row, rather than failing the whole file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # process-wide; the default (128 KiB) cuts long documents
    reader = csv.reader(text, dialect=dialect)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"{source}:1: the header row does not parse ({exc})", field="header", row=1) from exc
    if any(_has_surrogates(h) for h in header) or len(set(header)) != len(header) or not any(header):
        raise InputError(
            f"{source}:1: the header row must hold distinct UTF-8 column names, got {header!r}", field="header", row=1
        )
    index = 0
    last = reader.line_num
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last = reader.line_num
            if index >= skip:
                kind = "TSV" if dialect == "excel-tab" else "CSV"
                yield Record(source, start, index, None, f"malformed {kind} row: {exc}")
            else:
                skipped.count = index + 1
            index += 1
            continue
        last = reader.line_num
        if not row:
            continue
        if index < skip:
            index += 1
            skipped.count = index
            continue
        if len(row) != len(header):
            yield Record(source, start, index, None, f"has {len(row)} fields, the header has {len(header)}")
        else:
            bad = next((h for h, v in zip(header, row) if _has_surrogates(v)), None)
            if bad is not None:
                yield Record(source, start, index, None, "invalid UTF-8", field=bad)
            else:
                yield Record(source, start, index, dict(zip(header, row)))
        index += 1


def _read_parquet(path: str, skip: int, skipped: _Skipped) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading Parquet ({path}) needs pyarrow, which is not installed: pip install 'milvus-m3[parquet]'"
        ) from exc
    with open(path, "rb") as fh:
        if fh.read(2) == _GZIP_MAGIC:
            raise ConfigError(f"{path}: a gzipped Parquet file cannot be streamed; gunzip it first")
    pf = pq.ParquetFile(path)
    row = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        n = int(batch.num_rows)
        if row + n <= skip:
            row += n
            skipped.count = row
            continue
        first = max(0, skip - row)
        skipped.count = max(skipped.count, min(skip, row + n))
        for offset, rec in enumerate(batch.slice(first).to_pylist()):
            index = row + first + offset
            yield Record(path, index + 1, index, {k: _plain(v) for k, v in rec.items()})
        row += n


def _plain(value: Any) -> Any:
    """Parquet values that JSON cannot hold, made plain (timestamps as ISO strings, decimals as floats)."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ----------------------------------------------------------------------------------------------- ids


def content_id(text: str, *, id_type: str = "varchar") -> str | int:
    """The stable id of a text: blake2b-128 of its UTF-8 as 32 hex characters (int64 collections: the
    first 8 digest bytes as a big-endian signed int)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    if id_type == "int64":
        return int.from_bytes(digest[:8], "big", signed=True)
    return digest.hex()


def default_state_path(uri: str, collection: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the CLI keeps a job's checkpoint: next to a Milvus Lite file (``x.db`` ->
    ``x.<collection>.ingest-state.json``), else ``./<collection>.ingest-state.json``."""
    if uri.endswith(".db") and "://" not in uri:
        db = Path(uri)
        return db.with_name(f"{db.stem}.{collection}.ingest-state.json")
    return Path(directory or ".") / f"{collection}.ingest-state.json"


# ------------------------------------------------------------------------------------------ checkpoint


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _source_key(source: str) -> str:
    return source if source == STDIN else str(Path(source).resolve())


def _stat(source: str) -> dict[str, int] | None:
    if source == STDIN:
        return None
    st = os.stat(source)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Checkpoint:
    """The state file: per input, the records settled; the errors file's length; the job's options."""

    def __init__(self, path: Path | None, options: Mapping[str, Any], resume: bool) -> None:
        self.path = path
        self.options = dict(options)
        self.inputs: dict[str, dict[str, Any]] = {}
        self.errors_offset: int | None = None
        self.resumed = False
        if path is None or not resume:
            return
        if not path.is_file():
            logger.info("no checkpoint at %s: starting from the beginning", path)
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            stored = dict(data["options"])
            inputs = {str(k): dict(v) for k, v in data["inputs"].items()}
            offset = data.get("errors_offset")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the ingest state file {path} is unreadable ({exc}); delete it and run without --resume "
                "(upserts make re-ingesting safe)"
            ) from exc
        diff = sorted(k for k in set(stored) | set(self.options) if stored.get(k) != self.options.get(k))
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} then, {self.options.get(k)!r} now" for k in diff)
            raise ConfigError(
                f"cannot resume from {path}: the job's options changed ({shown}); use the same options, or run "
                "without --resume to start over (upserts make that safe)"
            )
        self.inputs = inputs
        self.errors_offset = int(offset) if isinstance(offset, int) else None
        self.resumed = True

    def done(self, source: str) -> int:
        entry = self.inputs.get(_source_key(source))
        return int(entry.get("done", 0)) if entry else 0

    def id_choice(self, source: str) -> tuple[bool, str | None]:
        """(known, field): the id field an earlier run chose for ``source`` (None: content hashes)."""
        entry = self.inputs.get(_source_key(source))
        if entry is None or "id_field" not in entry:
            return False, None
        return True, entry["id_field"]

    def begin(self, sources: Sequence[str]) -> None:
        for source in sources:
            key = _source_key(source)
            stat = _stat(source)
            entry = self.inputs.setdefault(key, {"done": 0})
            if self.resumed and entry.get("stat") and stat and entry["stat"] != stat and entry.get("done"):
                logger.warning(
                    "%s changed since the checkpoint (size/mtime); resuming after its first %d records anyway",
                    source, entry["done"],
                )
            if stat:
                entry["stat"] = stat

    def commit(self, positions: Mapping[str, int], id_choices: Mapping[str, str | None], errors_offset: int | None,
               finished: bool = False) -> None:
        for source, done in positions.items():
            entry = self.inputs.setdefault(_source_key(source), {"done": 0})
            entry["done"] = max(int(entry.get("done", 0)), done)
        for source, choice in id_choices.items():
            self.inputs.setdefault(_source_key(source), {"done": 0})["id_field"] = choice
        self.errors_offset = errors_offset
        if self.path is None:
            return
        _atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "options": self.options,
                "inputs": self.inputs,
                "errors_offset": errors_offset,
                "finished": finished,
                "updated": time.time(),
            },
        )


class _ErrorLog:
    """The errors file: JSON lines appended and fsynced per batch, before the batch's checkpoint."""

    def __init__(self, path: Path | None, resume_offset: int | None, resumed: bool) -> None:
        self.path = path
        self.offset = 0
        if path is None:
            return
        if resumed and path.exists():
            size = path.stat().st_size
            self.offset = min(size, resume_offset or 0)
            if size > self.offset:
                with open(path, "r+b") as fh:  # drop lines of a batch the checkpoint did not cover
                    fh.truncate(self.offset)
        elif path.exists():
            path.unlink()

    def write(self, errors: Sequence[RowError]) -> None:
        if self.path is None or not errors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.writelines(
                json.dumps(err.to_json(), ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
                for err in errors
            )
            fh.flush()
            os.fsync(fh.fileno())
            self.offset = fh.tell()


# ------------------------------------------------------------------------------------------- batches


class _BadValue(Exception):
    """A field value that cannot be stored; the message is the bad row's error."""


@dataclass
class _Doc:
    source: str
    line: int
    index: int
    id: str | int
    text: str
    metadata: dict[str, Any]
    fields: dict[str, Any]


@dataclass
class _Batch:
    rows: list[dict[str, Any]]
    errors: list[RowError]
    read: int
    written_docs: int
    tokens: int
    truncated: int
    positions: dict[str, int]
    id_choices: dict[str, str | None]
    skipped: int
    first: tuple[str, int]


@dataclass
class _End:
    skipped: int


@dataclass
class _Failure:
    exc: BaseException


@dataclass(frozen=True)
class _Options:
    text_field: str
    title_field: str | None
    id_field: str | None
    hash_ids: bool
    metadata_fields: tuple[str, ...]
    chunk_tokens: int | None
    chunk_overlap: int
    truncate: bool
    max_tokens: int | None


class _Preparer:
    """Turns records into validated Milvus rows: ids, text, metadata, chunks, embeddings."""

    def __init__(self, opts: _Options, spec: CollectionSpec, manager: CollectionManager, encoder: Encoder,
                 checkpoint: _Checkpoint, formats: Mapping[str, str]) -> None:
        self.opts = opts
        self.spec = spec
        self.manager = manager
        self.encoder = encoder
        self.formats = formats
        self.scalars: dict[str, ScalarField] = {f.name: f for f in spec.scalar_fields}
        self.id_choices: dict[str, str | None] = {}
        for source in formats:
            known, choice = checkpoint.id_choice(source)
            if known:
                self.id_choices[source] = choice

    # -- one record ----------------------------------------------------------------------------

    def _id_field(self, source: str, data: Mapping[str, Any]) -> str | None:
        if self.opts.hash_ids:
            return None
        if self.opts.id_field is not None:
            return self.opts.id_field
        if source not in self.id_choices:
            if self.formats[source] == "beir":
                self.id_choices[source] = "_id"
            else:
                self.id_choices[source] = "id" if "id" in data else "_id" if "_id" in data else None
        return self.id_choices[source]

    def to_doc(self, rec: Record) -> _Doc | RowError:
        def bad(error: str, fld: str | None, doc_id: Any = None) -> RowError:
            return RowError(rec.source, rec.line, doc_id if isinstance(doc_id, (str, int)) else None, fld, error)

        if rec.data is None:
            return bad(rec.error or "unreadable record", rec.field)
        data = rec.data
        opts = self.opts
        beir = self.formats[rec.source] == "beir"
        id_field = self._id_field(rec.source, data)
        raw_id = data.get(id_field) if id_field is not None else None
        if id_field is not None and (raw_id is None or raw_id == ""):
            return bad(f"missing id: the record has no {id_field!r} value", id_field)
        text_field = opts.text_field
        body = data.get(text_field)
        if body is None:
            return bad(f"missing text: the record has no {text_field!r} value", text_field, raw_id)
        if not isinstance(body, str):
            return bad(f"text must be a string, got {_json_type(body)}", text_field, raw_id)
        title_field = opts.title_field or ("title" if beir else None)
        title = data.get(title_field) if title_field else None
        if title is not None and not isinstance(title, str):
            return bad(f"title must be a string, got {_json_type(title)}", title_field, raw_id)
        text = f"{title} {body}".strip() if title else body
        if not text.strip():
            return bad("empty text", text_field, raw_id)
        if "\x00" in text:
            return bad("text holds a NUL byte; strip control characters first", text_field, raw_id)
        if _has_surrogates(text):
            return bad("text is not valid UTF-8 (lone surrogates)", text_field, raw_id)
        if id_field is None:
            doc_id: str | int = content_id(text, id_type=self.spec.id_type)
        else:
            try:
                doc_id = self._check_id(raw_id)
            except _BadValue as exc:
                return bad(str(exc), id_field, raw_id)
        metadata: dict[str, Any] = {}
        if beir and isinstance(data.get("metadata"), Mapping):
            metadata.update(data["metadata"])
        for name in opts.metadata_fields:
            if name in data:
                metadata[name] = data[name]
        if title_field and title:
            metadata[title_field] = title
        fields: dict[str, Any] = {}
        for name, sf in self.scalars.items():
            try:
                fields[name] = _convert_scalar(sf, data.get(name))
            except _BadValue as exc:
                return bad(str(exc), name, doc_id)
        return _Doc(rec.source, rec.line, rec.index, doc_id, text, metadata, fields)

    def _check_id(self, raw: Any) -> str | int:
        """The id as the collection stores it; _BadValue says why ``raw`` cannot be one."""
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise _BadValue(f"id must be a string or an integer, got {_json_type(raw)}")
        if self.spec.id_type == "varchar":
            return str(raw)
        if isinstance(raw, int):
            return raw
        try:
            return int(raw.strip())
        except ValueError:
            raise _BadValue(f"id {raw!r} is not an integer, and the collection has int64 ids") from None

    # -- one batch -----------------------------------------------------------------------------

    def prepare(self, records: Sequence[Record], skipped: int) -> _Batch:
        errors: list[RowError] = []
        docs: list[_Doc] = []
        seen: dict[str | int, _Doc] = {}
        positions: dict[str, int] = {}
        for rec in records:
            positions[rec.source] = rec.index + 1
            got = self.to_doc(rec)
            if isinstance(got, RowError):
                errors.append(got)
                continue
            first = seen.get(got.id)
            if first is not None:
                errors.append(
                    RowError(got.source, got.line, got.id, "id",
                             f"duplicate id within the batch (first at {first.source}:{first.line}); "
                             "the first one is kept")
                )
                continue
            seen[got.id] = got
            docs.append(got)
        rows, written, tokens, truncated = self._rows(docs, errors)
        order = {(r.source, r.line): k for k, r in enumerate(records)}
        errors.sort(key=lambda e: order.get((e.file, e.line), 0))
        choices = {s: c for s, c in self.id_choices.items() if s in positions}
        return _Batch(rows, errors, len(records), written, tokens, truncated, positions, choices, skipped,
                      (records[0].source, records[0].line))

    def _chunks(self, docs: Sequence[_Doc], errors: list[RowError]) -> list[tuple[_Doc, int, str]]:
        out: list[tuple[_Doc, int, str]] = []
        opts = self.opts
        for doc in docs:
            if opts.chunk_tokens is None:
                out.append((doc, 0, doc.text))
                continue
            assert isinstance(self.encoder, _Chunker)
            try:
                spans = self.encoder.chunk_spans(doc.text, opts.chunk_tokens, opts.chunk_overlap)
            except InputError as exc:
                errors.append(RowError(doc.source, doc.line, doc.id, exc.field or "text", str(exc)))
                continue
            pieces = [doc.text[s:e] for s, e in spans]
            pieces = [p for p in pieces if p.strip()]
            if not pieces:
                errors.append(RowError(doc.source, doc.line, doc.id, "text", "text has no tokens to embed"))
                continue
            out.extend((doc, i, p) for i, p in enumerate(pieces))
        return out

    def _encode(self, chunks: list[tuple[_Doc, int, str]], errors: list[RowError]
                ) -> tuple[list[tuple[_Doc, int, str]], M3Embeddings | None]:
        """Embed; a row-level InputError (e.g. TextTooLongError) drops that row's document and retries."""
        while chunks:
            try:
                return chunks, self.encoder.encode_documents([c[2] for c in chunks])
            except InputError as exc:
                row = exc.row
                if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < len(chunks):
                    raise
                chunks = self._drop_doc(chunks, chunks[row][0], exc.field or "text", str(exc), errors)
        return chunks, None

    @staticmethod
    def _drop_doc(chunks: list[tuple[_Doc, int, str]], doc: _Doc, fld: str, error: str,
                  errors: list[RowError]) -> list[tuple[_Doc, int, str]]:
        errors.append(RowError(doc.source, doc.line, doc.id, fld, error))
        return [c for c in chunks if c[0] is not doc]

    def _rows(self, docs: Sequence[_Doc], errors: list[RowError]) -> tuple[list[dict[str, Any]], int, int, int]:
        chunks = self._chunks(docs, errors)
        chunks, emb = self._encode(chunks, errors)
        if emb is None or not chunks:
            return [], 0, 0, 0
        cut_docs = {id(chunks[i][0]): chunks[i][0] for i in emb.truncated}
        truncated = 0
        if cut_docs:
            if self.opts.truncate:
                truncated = len(cut_docs)
            else:
                limit = f"{self.opts.max_tokens} tokens" if self.opts.max_tokens else "the encoder's max length"
                keep: list[int] = []
                for i, chunk in enumerate(chunks):
                    if id(chunk[0]) not in cut_docs:
                        keep.append(i)
                for doc in cut_docs.values():
                    errors.append(RowError(
                        doc.source, doc.line, doc.id, "text",
                        f"text is longer than {limit} (the model's document max length); split long documents "
                        "with chunk_tokens (--chunk-tokens) or allow cutting them with truncate=True (--truncate)",
                    ))
                chunks = [chunks[i] for i in keep]
                emb = emb.select(keep)
                if not chunks:
                    return [], 0, 0, 0
        while chunks:
            try:
                rows = self._build(chunks, emb)
                break
            except InputError as exc:
                row = exc.row
                if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < len(chunks):
                    raise
                doc = chunks[row][0]
                keep = [i for i, c in enumerate(chunks) if c[0] is not doc]
                errors.append(RowError(doc.source, doc.line, doc.id, exc.field, str(exc)))
                chunks = [chunks[i] for i in keep]
                emb = emb.select(keep)
        else:
            return [], 0, 0, 0
        written = len({id(c[0]) for c in chunks})
        tokens = sum(emb.token_counts) if emb.token_counts else 0
        if truncated:
            truncated = len({id(c[0]) for c in chunks if id(c[0]) in cut_docs})
        return rows, written, tokens, truncated

    def _build(self, chunks: Sequence[tuple[_Doc, int, str]], emb: M3Embeddings) -> list[dict[str, Any]]:
        chunked = self.spec.chunked
        ids: list[str | int] = [f"{d.id}#{i}" if chunked else d.id for d, i, _ in chunks]
        fields = {name: [d.fields[name] for d, _, _ in chunks] for name in self.scalars}
        return self.manager.prepare_rows(
            self.spec,
            ids=ids,
            texts=[t for _, _, t in chunks],
            embeddings=emb,
            metadata=[d.metadata for d, _, _ in chunks],
            fields=fields or None,
            parent_ids=[str(d.id) for d, _, _ in chunks] if chunked else None,
            chunk_indexes=[i for _, i, _ in chunks] if chunked else None,
        )


def _convert_scalar(sf: ScalarField, value: Any) -> Any:
    """CSV gives strings: turn them into the declared type (other values go to prepare_rows as they are)."""
    if not isinstance(value, str) or sf.dtype == "varchar":
        return value
    text = value.strip()
    if text == "":
        return None
    try:
        if sf.dtype == "int64":
            return int(text)
        if sf.dtype == "double":
            return float(text)
    except ValueError:
        raise _BadValue(f"field {sf.name!r}: {value!r} is not a {sf.dtype}") from None
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise _BadValue(f"field {sf.name!r}: {value!r} is not a bool (true/false)")


def _batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------- ingest


def ingest(
    files: Sequence[str | os.PathLike[str]],
    *,
    manager: CollectionManager,
    collection: str,
    encoder: Encoder,
    format: str = "auto",
    id_field: str | None = None,
    hash_ids: bool = False,
    text_field: str = "text",
    title_field: str | None = None,
    metadata_fields: Sequence[str] = (),
    batch_size: int = 64,
    on_error: str = "skip",
    errors_path: str | os.PathLike[str] | None = None,
    state_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    chunk_tokens: int | None = None,
    chunk_overlap: int = 0,
    truncate: bool = False,
    progress: bool | None = None,
    on_batch: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Embed and upsert the records of ``files`` into ``collection`` (which must exist; see the module
    documentation for formats, ids, chunking, bad rows, resume and overlap).

    batch_size: records per batch (the unit of reading, embedding, writing and checkpointing).
    on_error: "skip" writes bad rows to ``errors_path`` and goes on; "fail" raises ``IngestAborted``
        before writing the batch that holds the first bad row.
    errors_path: JSON-lines file for bad rows (None: only counted, and the first few kept in the report).
    state_path: checkpoint file (None: no checkpoints; ``resume`` then needs one).
    progress: a tqdm bar on stderr with docs/s; None shows it when stderr is a terminal.
    on_batch: called in the calling thread after each batch is written and checkpointed, with the
        report so far (for progress reporting of callers that do their own).
    """
    started = time.perf_counter()
    if isinstance(files, (str, os.PathLike)):
        raise ConfigError("files must be a list of paths ('-' for stdin), not one path; wrap it: [path]")
    sources = [os.fspath(f) for f in files]
    opts = _check_options(
        sources, encoder, format=format, id_field=id_field, hash_ids=hash_ids,
        text_field=text_field, title_field=title_field, metadata_fields=metadata_fields, batch_size=batch_size,
        on_error=on_error, resume=resume, state_path=state_path, chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap, truncate=truncate,
    )
    spec = manager.check_collection(collection, dense_dim=encoder.dense_dim, model_name=encoder.model_name)
    if spec.auto_id:
        raise ConfigError(
            f"collection {collection!r} uses auto_id; ingestion upserts by id so that re-runs and resumes "
            "cannot duplicate documents. Create the collection without auto_id"
        )
    if spec.chunked and spec.id_type != "varchar":
        raise ConfigError(f"collection {collection!r} is chunked with int64 ids; chunk ids ('P#i') need varchar ids")
    if opts.chunk_tokens is not None and not spec.chunked:
        raise ConfigError(
            f"chunk_tokens needs a chunked collection, and {collection!r} is not one; create it with "
            "CollectionSpec(chunked=True) (milvus-m3 create --chunked)"
        )
    formats = {s: detect_format(s, format) for s in sources}
    for s, kind in formats.items():
        if kind == "parquet":
            _require_pyarrow(s)
    options = {
        "collection": collection,
        "format": format,
        "id_field": id_field,
        "hash_ids": hash_ids,
        "text_field": text_field,
        "title_field": title_field,
        "metadata_fields": list(metadata_fields),
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "truncate": truncate,
    }
    checkpoint = _Checkpoint(Path(state_path) if state_path is not None else None, options, resume)
    checkpoint.begin(sources)
    if not checkpoint.resumed:
        checkpoint.commit({}, {}, 0)  # a stale state file of another run must not be resumed from
    errlog = _ErrorLog(Path(errors_path) if errors_path is not None else None, checkpoint.errors_offset,
                       checkpoint.resumed)
    preparer = _Preparer(opts, spec, manager, encoder, checkpoint, formats)

    q: queue.Queue[_Batch | _End | _Failure] = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()

    def put(item: _Batch | _End | _Failure) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    skipped_box = [0]

    def records() -> Iterator[Record]:
        for s in sources:
            box = _Skipped()
            done = checkpoint.done(s) if checkpoint.resumed else 0
            base = skipped_box[0]
            for rec in _read(s, formats[s], done, box):
                skipped_box[0] = base + box.count
                yield rec
            skipped_box[0] = base + box.count

    def produce() -> None:
        try:
            for batch in _batched(records(), batch_size):
                if stop.is_set():
                    return
                prepared = preparer.prepare(batch, skipped_box[0])
                if not put(prepared):
                    return
            put(_End(skipped_box[0]))
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread, which raises it
            put(_Failure(exc))

    bar = _progress_bar(progress, collection)
    totals = {"read": 0, "written": 0, "failed": 0, "chunks": 0, "tokens": 0, "truncated": 0, "skipped": 0}
    kept: list[RowError] = []

    def report() -> IngestReport:
        elapsed = time.perf_counter() - started
        return IngestReport(
            read=totals["read"],
            written=totals["written"],
            skipped=totals["skipped"],
            failed=totals["failed"],
            chunks=totals["chunks"],
            elapsed_s=elapsed,
            docs_per_s=totals["written"] / elapsed if elapsed > 0 else 0.0,
            tokens_per_s=totals["tokens"] / elapsed if elapsed > 0 else 0.0,
            truncated=totals["truncated"],
            errors_path=str(errlog.path) if errlog.path is not None else None,
            tokens=totals["tokens"],
            state_path=str(checkpoint.path) if checkpoint.path is not None else None,
            errors=tuple(kept),
        )

    producer = threading.Thread(target=produce, name="milvus-m3-ingest-producer", daemon=True)
    producer.start()
    finished = False
    try:
        while True:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                if not producer.is_alive() and q.empty():
                    raise MilvusM3Error("the ingest producer thread stopped without a result") from None
                continue
            if isinstance(item, _Failure):
                raise item.exc
            if isinstance(item, _End):
                totals["skipped"] = item.skipped
                break
            totals["skipped"] = item.skipped
            totals["read"] += item.read
            if item.errors and on_error == "fail":
                errlog.write(item.errors)
                totals["failed"] += len(item.errors)
                _keep(kept, item.errors)
                first = item.errors[0]
                raise IngestAborted(
                    f"bad row at {first.file}:{first.line}: {first.error} ({len(item.errors)} bad in the batch "
                    f"starting at {item.first[0]}:{item.first[1]}; on_error='fail'). Nothing of that batch was "
                    f"written; {totals['written']} documents from earlier batches are stored. Fix the input and "
                    "rerun with --resume, or use --on-error skip",
                    report=report(),
                    error=first,
                )
            if item.rows:
                manager.write_rows(collection, item.rows, mode="upsert")
            errlog.write(item.errors)
            checkpoint.commit(item.positions, item.id_choices, errlog.offset if errlog.path else None)
            totals["written"] += item.written_docs
            totals["chunks"] += len(item.rows)
            totals["failed"] += len(item.errors)
            totals["tokens"] += item.tokens
            totals["truncated"] += item.truncated
            _keep(kept, item.errors)
            for err in item.errors:
                logger.debug("bad row %s", err)
            if bar is not None:
                bar.update(item.read)
                bar.set_postfix(written=totals["written"], failed=totals["failed"], refresh=False)
            if on_batch is not None:
                on_batch(report())
        checkpoint.commit({}, preparer.id_choices, errlog.offset if errlog.path else None, finished=True)
        finished = True
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        producer.join(timeout=None if finished else 2.0)
        if bar is not None:
            bar.close()
    result = report()
    if result.failed:
        logger.warning("%d bad rows%s", result.failed, f" (see {result.errors_path})" if result.errors_path else "")
    return result


def _keep(kept: list[RowError], errors: Sequence[RowError]) -> None:
    room = MAX_REPORTED_ERRORS - len(kept)
    if room > 0:
        kept.extend(errors[:room])


def _require_pyarrow(path: str) -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading Parquet ({path}) needs pyarrow, which is not installed: pip install 'milvus-m3[parquet]'"
        ) from exc


def _progress_bar(progress: bool | None, collection: str) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=f"ingest {collection}", unit="doc", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _check_options(
    sources: Sequence[str],
    encoder: Encoder,
    *,
    format: str,
    id_field: str | None,
    hash_ids: bool,
    text_field: str,
    title_field: str | None,
    metadata_fields: Sequence[str],
    batch_size: int,
    on_error: str,
    resume: bool,
    state_path: str | os.PathLike[str] | None,
    chunk_tokens: int | None,
    chunk_overlap: int,
    truncate: bool,
) -> _Options:
    if not sources:
        raise ConfigError("files must be a non-empty list of paths ('-' for stdin)")
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    seen: set[str] = set()
    for s in sources:
        key = _source_key(s)
        if key in seen:
            raise ConfigError(f"input {s} is given twice; give each input once")
        seen.add(key)
        if s != STDIN and not os.path.isfile(s):
            raise ConfigError(f"input file {s} does not exist or is not a file")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if resume and state_path is None:
        raise ConfigError("resume=True needs state_path (the checkpoint file of the earlier run)")
    if hash_ids and id_field is not None:
        raise ConfigError("give id_field or hash_ids, not both")
    for name, value in (("text_field", text_field), ("id_field", id_field), ("title_field", title_field)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{name} must be a non-empty field name, got {value!r}")
    if isinstance(metadata_fields, str):
        raise ConfigError("metadata_fields must be a list of field names, not one string")
    max_tokens = getattr(encoder, "document_max_length", None) or getattr(encoder, "max_length", None)
    max_tokens = int(max_tokens) if isinstance(max_tokens, int) else None
    if chunk_tokens is not None:
        if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
        if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_tokens:
            raise ConfigError(f"chunk_overlap must be an int in [0, chunk_tokens={chunk_tokens}), got {chunk_overlap!r}")
        if not isinstance(encoder, _Chunker):
            raise ConfigError(
                f"chunking needs an encoder with chunk_spans(text, max_tokens, overlap); {type(encoder).__name__} has none"
            )
        if max_tokens is not None and chunk_tokens > max_tokens - 2:
            raise ConfigError(
                f"chunk_tokens={chunk_tokens} does not fit the encoder's document max length of {max_tokens} tokens "
                f"(with <s> and </s>); use at most {max_tokens - 2}"
            )
    elif chunk_overlap:
        raise ConfigError("chunk_overlap needs chunk_tokens")
    return _Options(
        text_field=text_field,
        title_field=title_field,
        id_field=id_field,
        hash_ids=hash_ids,
        metadata_fields=tuple(metadata_fields),
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        truncate=truncate,
        max_tokens=max_tokens,
    )

