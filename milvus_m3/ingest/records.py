"""The values ingestion hands around: a record as read, a bad row, the run's report.

Imports nothing heavy; every other ingest module builds on these.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MAX_REPORTED_ERRORS", "BadValue", "IngestReport", "Record", "RowError", "json_type"]

MAX_REPORTED_ERRORS = 20
"""Bad rows kept in ``IngestReport.errors`` (all of them go to the errors file)."""


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
    digest: str | None = None
    """blake2b of the input up to this record (JSONL, CSV, TSV): what a resume checks the settled part against."""


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
            lines.append(
                f"bad rows ({self.failed}" + (f", all in {self.errors_path}):" if self.errors_path else "):")
            )
            lines.extend(f"  {e}" for e in self.errors[:5])
            if self.failed > 5:
                lines.append(f"  ... {self.failed - 5} more")
        return "\n".join(lines)


class RunCounts:  # shared by ingest and ray_ingest; not part of the public surface
    """A run's counters (one owner: the writing side of ``ingest`` or of ``ray_ingest``) and its report."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.read = self.written = self.skipped = self.failed = 0
        self.chunks = self.tokens = self.truncated = 0
        self.kept: list[RowError] = []
        """The first bad rows, at most ``MAX_REPORTED_ERRORS``."""

    def counted_report(self, *, errors_path: str | None, state_path: str | None) -> IngestReport:
        elapsed = time.perf_counter() - self.started
        return IngestReport(
            read=self.read,
            written=self.written,
            skipped=self.skipped,
            failed=self.failed,
            chunks=self.chunks,
            elapsed_s=elapsed,
            docs_per_s=self.written / elapsed if elapsed > 0 else 0.0,
            tokens_per_s=self.tokens / elapsed if elapsed > 0 else 0.0,
            truncated=self.truncated,
            errors_path=errors_path,
            tokens=self.tokens,
            state_path=state_path,
            errors=tuple(self.kept),
        )


class BadValue(Exception):
    """A field value that cannot be stored; the message is the bad row's error."""


def json_type(value: Any) -> str:
    """How a bad row's message names the JSON type of ``value`` ("an array", "a number", "null", ...)."""
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
