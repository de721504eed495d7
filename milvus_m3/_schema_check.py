"""Does a collection's real schema match the milvus-m3 record in its description?

A record can disagree with the schema it sits on (a collection built by hand, or by another tool, with
a record copied from a milvus-m3 one): rows would then be written and every search would fail. So
``CollectionManager.spec`` checks the fields the record promises (name, type, dense dim, text and id
lengths) against ``describe_collection`` before the spec is trusted. Extra fields are allowed (e.g.
function outputs); missing or different ones are a SchemaMismatchError naming the field.

Also here: the build id, a random token milvus-m3 writes into the record when it creates a collection,
so that a checkpoint of a dropped and recreated collection is not resumed into the new one.

Private to ``collection.py``; it reads the dict pymilvus returns, and imports neither pymilvus nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import SchemaMismatchError
from .schema import (
    CHUNK_FIELD,
    DENSE_FIELD,
    ID_FIELD,
    META_MARKER,
    METADATA_FIELD,
    PARENT_FIELD,
    SPARSE_FIELD,
    TEXT_FIELD,
    CollectionSpec,
)

__all__ = ["check_schema_matches", "record_build_id"]

_SCALAR_TYPES = {"varchar": "VARCHAR", "int64": "INT64", "double": "DOUBLE", "bool": "BOOL"}


def _expected(spec: CollectionSpec) -> dict[str, tuple[str, dict[str, int]]]:
    """field name -> (DataType name, params that must match) the record promises."""
    want: dict[str, tuple[str, dict[str, int]]] = {
        ID_FIELD: ("VARCHAR", {"max_length": spec.id_max_length})
        if spec.id_type == "varchar"
        else ("INT64", {}),
        TEXT_FIELD: ("VARCHAR", {"max_length": spec.text_max_length}),
        DENSE_FIELD: ("FLOAT_VECTOR", {"dim": spec.dense_dim}),
        SPARSE_FIELD: ("SPARSE_FLOAT_VECTOR", {}),
        METADATA_FIELD: ("JSON", {}),
    }
    if spec.chunked:
        want[PARENT_FIELD] = ("VARCHAR", {})
        want[CHUNK_FIELD] = ("INT64", {})
    for sf in spec.scalar_fields:
        want[sf.name] = (
            _SCALAR_TYPES[sf.dtype],
            {"max_length": sf.max_length} if sf.dtype == "varchar" else {},
        )
    return want


def _type_name(value: Any) -> str:
    return str(getattr(value, "name", value)).upper()


def check_schema_matches(name: str, spec: CollectionSpec, desc: Mapping[str, Any]) -> None:
    """SchemaMismatchError when collection ``name``'s fields (``desc``: describe_collection's answer)
    are not the ones its milvus-m3 record (``spec``) describes."""
    fields = {str(f.get("name")): f for f in desc.get("fields", []) if isinstance(f, Mapping)}
    fix = "the collection was not built from this record; recreate it with milvus-m3 (--recreate drops its data)"
    for field, (dtype, params) in _expected(spec).items():
        got = fields.get(field)
        if got is None:
            raise SchemaMismatchError(
                f"collection {name!r}: its milvus-m3 record needs a field {field!r}, which it lacks; {fix}"
            )
        if _type_name(got.get("type")) != dtype:
            raise SchemaMismatchError(
                f"collection {name!r}: field {field!r} is {_type_name(got.get('type'))}, its milvus-m3 record says {dtype}; {fix}"
            )
        real = got.get("params") or {}
        for key, value in params.items():
            if key in real and int(real[key]) != value:
                raise SchemaMismatchError(
                    f"collection {name!r}: field {field!r} has {key} {real[key]}, its milvus-m3 record says {value}; {fix}"
                )


def record_build_id(description: str) -> str | None:
    """The build id in a milvus-m3 record (None: no record, or one written before build ids)."""
    if not description.startswith(META_MARKER):
        return None
    try:
        value = json.loads(description[len(META_MARKER) :]).get("build_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
