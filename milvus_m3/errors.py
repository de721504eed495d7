"""One error tree for milvus-m3. Every message says what went wrong and how to fix it.

MilvusM3Error
├── ConfigError            (also ValueError)  a bad option or argument
├── InputError             (also ValueError)  a bad document, query or vector; names field and row
│   ├── TextTooLongError                      text beyond max length with overflow="error"
│   └── IngestAborted                         ingest with on_error="fail" met a bad row
├── ModelLoadError                            checkpoint missing files or unreadable
├── MissingDependencyError (also ImportError) an optional package is not installed
├── CollectionError
│   ├── CollectionNotFoundError
│   ├── CollectionExistsError
│   └── SchemaMismatchError                   existing collection disagrees with embedder/spec
├── SearchError                               a search the engine refused or answered badly
│   └── FilterError                           a filter that does not parse or is unsafe
└── MilvusUnavailableError                    the server could not be reached after retries
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ingest import IngestReport, RowError

__all__ = [
    "CollectionError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "ConfigError",
    "FilterError",
    "IngestAborted",
    "InputError",
    "MilvusM3Error",
    "MilvusUnavailableError",
    "MissingDependencyError",
    "ModelLoadError",
    "SchemaMismatchError",
    "SearchError",
    "TextTooLongError",
]


class MilvusM3Error(Exception):
    """Root of every error milvus-m3 raises on purpose."""


class ConfigError(MilvusM3Error, ValueError):
    """An option or argument has a value milvus-m3 cannot use."""


class InputError(MilvusM3Error, ValueError):
    """A document, query or vector is invalid. ``field`` and ``row`` say where."""

    def __init__(self, message: str, *, field: str | None = None, row: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.row = row


class TextTooLongError(InputError):
    """A text is longer than the model's max length and the caller asked for an error."""


class IngestAborted(InputError):
    """``on_error="fail"`` met a bad row; nothing of its batch was written. ``report`` says what was."""

    def __init__(self, message: str, *, report: IngestReport, error: RowError) -> None:
        super().__init__(message, field=error.field, row=error.line)
        self.report = report
        self.error = error


class ModelLoadError(MilvusM3Error):
    """A checkpoint could not be loaded (missing or corrupt files)."""


class MissingDependencyError(MilvusM3Error, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class CollectionError(MilvusM3Error):
    """A collection-level problem."""


class CollectionNotFoundError(CollectionError):
    """The named collection does not exist."""


class CollectionExistsError(CollectionError):
    """The collection exists and neither exists_ok nor recreate was given."""


class SchemaMismatchError(CollectionError):
    """An existing collection was built with another model, dimension or layout."""


class SearchError(MilvusM3Error):
    """A search failed or the engine returned an answer that cannot be right."""


class FilterError(SearchError, ValueError):
    """A filter does not parse, names an unknown field, or has an unusable value."""


class MilvusUnavailableError(MilvusM3Error, ConnectionError):
    """Milvus could not be reached (after retries with backoff)."""
