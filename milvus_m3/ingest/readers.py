"""Input readers: format detection, and JSONL / CSV / TSV / Parquet / BEIR records from files or stdin.

JSONL (``.jsonl``, ``.ndjson``, ``.json``), CSV (``.csv``), TSV (``.tsv``, ``.tab``), Parquet (``.parquet``,
``.pq``; needs the ``parquet`` extra: ``pip install 'milvus-m3[parquet]'``) and BEIR corpora (a file named
``corpus.jsonl``, or ``format="beir"``: ``_id``, ``title``, ``text``). ``-`` reads standard input. Gzip is
recognised by its magic bytes, whatever the file is called. Files are read record by record (Parquet in
row groups of at most 1,024 rows); none is loaded whole. A UTF-16 file is refused once, by name, rather
than giving a "malformed" error on every line. A JSONL record that names one key twice (at any depth) is a
bad row: which of its values is meant is ambiguous (``json`` would silently keep the last).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import datetime as _dt
import decimal
import gzip
import hashlib
import io
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from .._checks import is_valid_utf8
from ..errors import ConfigError, InputError, MissingDependencyError
from .records import Record, json_type

__all__ = [
    "FORMATS",
    "MAX_CSV_ROW_LINES",
    "PARQUET_BATCH_ROWS",
    "STDIN",
    "Format",
    "Skipped",
    "detect_format",
    "estimate_records",
    "read_records",
    "read_source",
    "require_pyarrow",
]

Format = Literal["auto", "jsonl", "csv", "tsv", "parquet", "beir"]
FORMATS: tuple[str, ...] = ("auto", "jsonl", "csv", "tsv", "parquet", "beir")
PARQUET_BATCH_ROWS = 1024
MAX_CSV_ROW_LINES = 1_000
"""A CSV/TSV row may span this many lines (quoted newlines); a longer one is a bad row (an unclosed quote)."""
STDIN = "-"
CSV_FIELD_LIMIT = 2**31 - 1
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_NO_STDIN_PARQUET = "Parquet cannot be read from stdin (its index is at the end of the file); pass the file"


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
    kind = EXTENSIONS.get(Path(name).suffix)
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


_COUNT_ALL_BYTES = 256 << 20
_SAMPLE_BYTES = 8 << 20


def estimate_records(path: str, kind: str) -> int | None:
    """About how many records ``path`` holds, for a progress bar's total and ETA, without parsing it:
    Parquet's row count; the line count of a plain file (exact up to 256 MiB, else from the line length
    of its first 8 MiB), less a CSV/TSV header. None for stdin and gzip (unknown before reading)."""
    try:
        if path == STDIN:
            return None
        if kind == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(min(size, _SAMPLE_BYTES))
            if head[:2] == _GZIP_MAGIC:
                return None
            lines = head.count(b"\n")
            if size <= _COUNT_ALL_BYTES:
                while chunk := fh.read(1 << 20):
                    lines += chunk.count(b"\n")
                    head = chunk
                lines += bool(head) and not head.endswith(b"\n")
            else:
                lines = round(size * lines / max(len(head), 1))
    except (OSError, ImportError, ValueError):
        return None
    return max(0, lines - (kind in ("csv", "tsv")))


def read_records(path: str, *, format: str = "auto", skip: int = 0) -> Iterator[Record]:
    """Records of one input, in order, streamed. The first ``skip`` records are passed over without
    being parsed where the format allows (JSONL lines are only counted)."""
    return read_source(path, detect_format(path, format), skip, Skipped())


class Skipped:
    """How many records a reader passed over (set as it reads), and the check of what it passed over:
    with ``expect`` (the digest a checkpoint stored for its last settled record) a reader whose first
    ``skip`` records hash differently raises ConfigError, unless ``force``."""

    def __init__(self, expect: str | None = None, force: bool = False) -> None:
        self.count = 0
        self.expect = expect
        self.force = force

    def verify(self, source: str, digest: str | None) -> None:
        if self.expect is None or digest == self.expect or self.force:
            return
        raise ConfigError(
            f"cannot resume: the first {self.count} records of {source} are not the ones the checkpoint settled "
            "(the input changed before the point it had reached). Run without --resume to ingest it again "
            "(upserts make that safe), or pass --force-resume (force_resume=True) to skip them anyway"
        )


def hasher() -> Any:
    return hashlib.blake2b(digest_size=16)


def read_source(path: str, kind: str, skip: int, skipped: Skipped) -> Iterator[Record]:
    """Records of ``path`` read as ``kind`` (a detected format), the first ``skip`` passed over and
    counted in ``skipped``."""
    if kind == "parquet":
        if path == STDIN:
            raise ConfigError(_NO_STDIN_PARQUET)
        yield from _read_parquet(path, skip, skipped)
        return
    with _open_text_source(path) as stream:
        if kind == "auto":
            kind = _sniff(stream.peek(512)[:512], "stdin")
            if kind == "parquet":
                raise ConfigError(_NO_STDIN_PARQUET)
        if kind in ("jsonl", "beir"):
            yield from _read_jsonl(stream, path, skip, skipped)
        elif kind in ("csv", "tsv"):
            yield from read_csv(stream, path, skip, skipped, "excel-tab" if kind == "tsv" else "excel")
        else:  # pragma: no cover - detect_format checks
            raise ConfigError(f"unknown format {kind!r}")


@contextlib.contextmanager
def _open_text_source(path: str) -> Iterator[io.BufferedReader]:
    """A peekable binary stream over a file or stdin, gunzipped when it starts with the gzip magic."""
    own = path != STDIN
    raw: Any = open(path, "rb") if own else sys.stdin.buffer
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
        raise InputError(
            f"{path}: the gzip stream is corrupt or cut short ({exc}); re-create the file"
        ) from exc
    finally:
        if own:
            raw.close()


def _refuse_utf16(stream: io.BufferedReader, path: str) -> None:
    """A UTF-16 file would give a 'malformed' error on every line: name the real problem once."""
    head = stream.peek(2)[:2]
    if head in _UTF16_BOMS:
        raise InputError(
            f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-encode it as UTF-8 "
            "(iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8)",
            field="file",
        )


def _read_jsonl(stream: io.BufferedReader, source: str, skip: int, skipped: Skipped) -> Iterator[Record]:
    index = 0
    h = hasher()
    for lineno, raw in enumerate(stream, 1):
        h.update(raw)
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        if index < skip:
            index += 1
            skipped.count = index
            if index == skip:
                skipped.verify(source, h.hexdigest())
            continue
        digest = h.hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Record(
                source, lineno, index, None, f"invalid UTF-8 at byte {exc.start} of the line", digest=digest
            )
            index += 1
            continue
        try:
            obj = json.loads(text, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            yield Record(source, lineno, index, None, str(exc), field=exc.key, digest=digest)
            index += 1
            continue
        except RecursionError:
            yield Record(
                source, lineno, index, None, "malformed JSON: nested too deep; flatten it", digest=digest
            )
            index += 1
            continue
        except ValueError as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            col = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            yield Record(source, lineno, index, None, f"malformed JSON: {msg}{col}", digest=digest)
        else:
            if isinstance(obj, dict):
                yield Record(source, lineno, index, obj, digest=digest)
            else:
                yield Record(
                    source,
                    lineno,
                    index,
                    None,
                    f"expected a JSON object, got {json_type(obj)}",
                    digest=digest,
                )
        index += 1
    if index < skip:
        skipped.verify(source, None)  # fewer records than were settled


class _DuplicateKey(ValueError):
    """A JSON object names one key twice: which value is meant is ambiguous (``json`` keeps the last)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"malformed JSON: the key {key!r} appears twice in one object, so its value is ambiguous; "
            "keep one of them"
        )
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of the JSONL reader: a dict, or ``_DuplicateKey`` for a repeated key (at
    any depth)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def require_pyarrow(path: str) -> None:
    """MissingDependencyError naming the extra when Parquet input ``path`` cannot be read."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading Parquet ({path}) needs pyarrow, which is not installed: pip install 'milvus-m3[parquet]'"
        ) from exc


def _read_parquet(path: str, skip: int, skipped: Skipped) -> Iterator[Record]:
    require_pyarrow(path)
    import pyarrow.parquet as pq

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


# ---------------------------------------- csv
# The CSV / TSV reader: records from a delimited file, a row with an unclosed quote costing only itself.


class _RowTooLong(Exception):
    """A CSV row ran over ``MAX_CSV_ROW_LINES`` lines (raised by ``_LineFeed`` inside the csv reader)."""


class _LineFeed:
    """Lines for ``csv.reader``, with the current row's lines kept (at most ``MAX_CSV_ROW_LINES``), so
    that a row with an unclosed quote can be given up on and its later lines read again as rows.
    ``digest()`` hashes the input's lines read so far (each once, however often it is read)."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._src = iter(text)
        self._back: collections.deque[tuple[int, str]] = collections.deque()
        self._pulled = 0
        self._hashed = 0
        self._hash = hasher()
        self.row: list[tuple[int, str]] = []

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if len(self.row) >= MAX_CSV_ROW_LINES:
            raise _RowTooLong
        if self._back:
            seq, line = self._back.popleft()
        else:
            seq, line = self._pulled, next(self._src)
            self._pulled += 1
        if seq == self._hashed:
            self._hash.update(line.encode("utf-8", "surrogateescape"))
            self._hashed += 1
        self.row.append((seq, line))
        return line

    def digest(self) -> str:
        return str(self._hash.hexdigest())

    @property
    def lines(self) -> list[str]:
        return [line for _, line in self.row]

    def at_eof(self) -> bool:
        if self._back:
            return False
        try:
            self._back.append((self._pulled, next(self._src)))
        except StopIteration:
            return True
        self._pulled += 1
        return False

    def take(self) -> int:
        """End the current row: how many lines it used."""
        n, self.row = len(self.row), []
        return n

    def replay_after_first(self) -> None:
        """Give up on the current row: its lines after the first are read again."""
        self._back.extendleft(reversed(self.row[1:]))
        self.row = []


def _unclosed_quote(lines: list[str], dialect: str) -> bool:
    """Whether a row that ended at the end of the input did so inside a quoted field."""
    try:
        list(csv.reader(lines, dialect=dialect, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _csv_rows(feed: _LineFeed, dialect: str, last: int) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(first line, fields, None) per row after the header, or (first line, None, why) for a row that
    does not parse. A row whose quote never closes (it would run to the end of the input, or over
    ``MAX_CSV_ROW_LINES`` lines) costs only itself: reading goes on at its second line."""
    kind = "TSV" if dialect == "excel-tab" else "CSV"
    reader = csv.reader(feed, dialect=dialect)
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RowTooLong:
            problem = (
                f"malformed {kind} row: a quoted field runs over more than {MAX_CSV_ROW_LINES} lines from line "
                f"{start} (an unclosed quote?); close the quote. Reading goes on at line {start + 1}"
            )
        except csv.Error as exc:
            last += feed.take()
            reader = csv.reader(feed, dialect=dialect)
            yield start, None, f"malformed {kind} row: {exc}"
            continue
        else:
            if not (len(feed.row) > 1 and feed.at_eof() and _unclosed_quote(feed.lines, dialect)):
                last += feed.take()
                yield start, row, None
                continue
            problem = (
                f"malformed {kind} row: a quote opened on line {start} is never closed (the row would span "
                f"{len(feed.row)} lines, to the end of the file); close the quote. Reading goes on at line {start + 1}"
            )
        feed.replay_after_first()
        last += 1
        reader = csv.reader(feed, dialect=dialect)
        yield start, None, problem


def read_csv(
    stream: io.BufferedReader, source: str, skip: int, skipped: Skipped, dialect: str
) -> Iterator[Record]:
    # Invalid UTF-8 is kept as lone surrogates and reported per row, rather than failing the whole file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide; the default (128 KiB) cuts long documents
    feed = _LineFeed(text)
    try:
        header = next(csv.reader(feed, dialect=dialect))
    except StopIteration:
        return
    except (csv.Error, _RowTooLong) as exc:
        raise InputError(f"{source}:1: the header row does not parse ({exc})", field="header", row=1) from exc
    if any(not is_valid_utf8(h) for h in header) or len(set(header)) != len(header) or not any(header):
        raise InputError(
            f"{source}:1: the header row must hold distinct UTF-8 column names, got {header!r}",
            field="header",
            row=1,
        )
    index = 0
    for start, row, problem in _csv_rows(feed, dialect, feed.take()):
        if row is not None and not row:
            continue  # a blank line is no record
        digest = feed.digest()
        if index < skip:
            index += 1
            skipped.count = index
            if index == skip:
                skipped.verify(source, digest)
            continue
        if row is None:
            yield Record(source, start, index, None, problem, digest=digest)
        elif len(row) != len(header):
            msg = f"has {len(row)} fields, the header has {len(header)}"
            yield Record(source, start, index, None, msg, digest=digest)
        else:
            bad = next((h for h, v in zip(header, row, strict=False) if not is_valid_utf8(v)), None)
            if bad is not None:
                yield Record(source, start, index, None, "invalid UTF-8", field=bad, digest=digest)
            else:
                yield Record(source, start, index, dict(zip(header, row, strict=False)), digest=digest)
        index += 1
    if index < skip:
        skipped.verify(source, None)  # fewer records than were settled
