"""The CSV / TSV reader: records from a delimited file, a row with an unclosed quote costing only itself."""

from __future__ import annotations

import collections
import csv
import io
from collections.abc import Iterator

from .._text import is_valid_utf8
from ..errors import InputError
from .readers import _CSV_FIELD_LIMIT, MAX_CSV_ROW_LINES, Skipped, _hasher
from .records import Record

__all__ = ["read_csv"]


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
        self._hash = _hasher()
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
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # process-wide; the default (128 KiB) cuts long documents
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
