"""The fields of a milvus-m3 collection: their names, the declared scalar columns (``ScalarField``) and
the sparse fields Milvus fills from the text with a built-in function (``FunctionField``, BM25).

The leaf of the collection part: it imports only ``errors``, so the schema, the BM25 leg and tenancy
all build on it without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

__all__ = [
    "BM25_FIELD",
    "CHUNK_FIELD",
    "DENSE_FIELD",
    "ID_FIELD",
    "MAX_JSON_BYTES",
    "MAX_VARCHAR_BYTES",
    "METADATA_FIELD",
    "META_MARKER",
    "PARENT_FIELD",
    "RESERVED_FIELDS",
    "SPARSE_FIELD",
    "TEXT_FIELD",
    "FunctionField",
    "ScalarField",
    "ScalarType",
]

# Field names in every milvus-m3 collection.
ID_FIELD = "id"
TEXT_FIELD = "text"
DENSE_FIELD = "dense"
SPARSE_FIELD = "sparse"
METADATA_FIELD = "metadata"
PARENT_FIELD = "parent_id"
CHUNK_FIELD = "chunk_index"
BM25_FIELD = "bm25"
"""The sparse field Milvus's BM25 function fills from the text (``CollectionSpec(bm25=True)``)."""
RESERVED_FIELDS = frozenset(
    {ID_FIELD, TEXT_FIELD, DENSE_FIELD, SPARSE_FIELD, METADATA_FIELD, PARENT_FIELD, CHUNK_FIELD, BM25_FIELD}
)


META_MARKER = "milvus-m3:"
MAX_VARCHAR_BYTES = 65_535
MAX_JSON_BYTES = 65_536

ScalarType = Literal["varchar", "int64", "double", "bool"]


@dataclass(frozen=True, kw_only=True)
class ScalarField:
    """A declared metadata column (filterable, typed), besides the free-form JSON ``metadata`` field."""

    name: str
    dtype: ScalarType = "varchar"
    max_length: int = 512
    default: str | int | float | bool | None = None
    """Stored when a row has no value. None: the value is required (unless nullable)."""
    nullable: bool = False
    """Allow missing values stored as null (Milvus servers only; Milvus Lite has no nullable fields)."""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name in RESERVED_FIELDS:
            raise ConfigError(
                f"scalar field name {self.name!r} must be an identifier and not one of {sorted(RESERVED_FIELDS)}"
            )
        if self.dtype not in ("varchar", "int64", "double", "bool"):
            raise ConfigError(f"scalar field {self.name!r}: dtype must be varchar, int64, double or bool")
        if self.dtype == "varchar" and not 1 <= self.max_length <= MAX_VARCHAR_BYTES:
            raise ConfigError(f"scalar field {self.name!r}: max_length must be in [1, {MAX_VARCHAR_BYTES}]")


@dataclass(frozen=True, kw_only=True)
class FunctionField:
    """A sparse vector field that Milvus fills from the text field with a built-in function (BM25).

    name: the output field. analyzer_params: the text field's analyzer (``{"type": "english"}``).
    multi_analyzer_params: Milvus's multi-language analyzer instead (``{"analyzers": {...}, "by_field": ...}``).
    index_params: e.g. ``{"bm25_k1": 1.2, "bm25_b": 0.75}``.
    """

    name: str
    function: Literal["BM25"] = "BM25"
    analyzer_params: Mapping[str, Any] = field(default_factory=lambda: {"type": "english"})
    multi_analyzer_params: Mapping[str, Any] | None = None
    index_type: str = "SPARSE_INVERTED_INDEX"
    metric_type: str = "BM25"
    index_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or (self.name in RESERVED_FIELDS and self.name != BM25_FIELD):
            raise ConfigError(
                f"function field name {self.name!r} must be an identifier and not one of {sorted(RESERVED_FIELDS)}"
            )
        if self.function != "BM25":
            raise ConfigError(f"function field {self.name!r}: function must be 'BM25', got {self.function!r}")

    @property
    def function_name(self) -> str:
        return f"milvus_m3_{self.name}" if self.name != "bm25" else "milvus_m3_bm25"
