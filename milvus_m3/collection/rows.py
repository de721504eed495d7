"""Row preparation: a batch of ids, texts, embeddings, metadata and declared fields -> validated Milvus rows.

Private to ``collection.py`` (``CollectionManager.prepare_rows`` and the id checks of ``get`` / ``delete``).
Every check raises an InputError that names the field and the row, with the fix; a batch is checked
whole before anything is written. Rows are checked one at a time in order (id, text, vectors,
metadata, chunk fields, declared fields), so the first bad cell is the one reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._checks import CheckedTexts, is_valid_utf8
from ..engine.capabilities import Capabilities
from ..errors import InputError
from ..sparse import to_milvus_sparse
from ..types import M3Embeddings
from .fields import MAX_JSON_BYTES
from .schema import (
    CHUNK_FIELD,
    DENSE_FIELD,
    ID_FIELD,
    METADATA_FIELD,
    PARENT_FIELD,
    SPARSE_FIELD,
    TEXT_FIELD,
    CollectionSpec,
    ScalarField,
)
from .tenancy import tenant_value_problem

# ---------------------------------------- jsonvalue
# What Milvus cannot store in a JSON cell although ``json.dumps`` writes it: checked before any write.
#
# Private to ``_rows.py`` (the ``metadata`` cell). Imports neither pymilvus nor torch.

MAX_JSON_DEPTH = 64
"""Nesting levels a metadata value may have (deeper ones are refused before json.dumps recurses)."""


def json_problem(value: Any, depth: int = 0) -> str | None:
    """What Milvus (or JSON) cannot store in ``value``: a lone surrogate in a string or key, an int
    beyond int64, keys that become the same JSON key (``{1: "a", "1": "b"}``), nesting beyond
    ``MAX_JSON_DEPTH``. None when there is nothing; other types are left to ``json.dumps``."""
    if depth > MAX_JSON_DEPTH:
        return f"is nested deeper than {MAX_JSON_DEPTH} levels; flatten it"
    if isinstance(value, str):
        return None if is_valid_utf8(value) else "holds a string that is not valid UTF-8 (a lone surrogate)"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        ok = -(2**63) <= int(value) < 2**63
        return None if ok else f"holds the integer {int(value)}, beyond int64; store it as a string"
    if isinstance(value, Mapping):
        keys: dict[str, Any] = {}
        for key, item in value.items():
            name = (
                key
                if isinstance(key, str)
                else json.dumps(key)
                if isinstance(key, (int, float, bool))
                else None
            )
            if name is not None:
                if not is_valid_utf8(name):
                    return "has a key that is not valid UTF-8 (a lone surrogate)"
                if name in keys:
                    return (
                        f"has keys {keys[name]!r} and {key!r}, which are the same JSON key {name!r}; keep one"
                    )
                keys[name] = key
            problem = json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


__all__ = ["check_id", "check_metadata", "check_scalar", "check_text", "prepare_rows"]

_CHAR_NAMES = {"'": "single quote", "\\": "backslash", "\n": "line feed", "\r": "carriage return"}


def prepare_rows(
    spec: CollectionSpec,
    caps: Capabilities,
    *,
    ids: Sequence[str | int] | None,
    texts: Sequence[str],
    embeddings: M3Embeddings,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
    fields: Mapping[str, Sequence[Any]] | None = None,
    parent_ids: Sequence[str] | None = None,
    chunk_indexes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Validate a batch and build Milvus rows for a collection of ``spec`` on an engine with ``caps``."""
    n = _check_shapes(spec, texts, embeddings)
    _check_ids_given(spec, ids, n)
    if metadata is not None and len(metadata) != n:
        raise InputError(f"{n} texts but {len(metadata)} metadata entries", field="metadata")
    _check_chunk_args(spec, parent_ids, chunk_indexes, n)
    declared = {f.name: f for f in spec.scalar_fields}
    columns = _scalar_columns(spec, fields, n)
    dense = _dense_matrix(embeddings)
    trusted = isinstance(texts, CheckedTexts)
    unsafe = caps.unsafe_id_chars
    seen: dict[Any, int] = {}
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {}
        if ids is not None:
            row[ID_FIELD] = _unique_id(ids[i], i, spec, unsafe, seen, caps.display_name)
        row[TEXT_FIELD] = check_text(texts[i], i, spec, trusted=trusted)
        row[DENSE_FIELD] = dense[i]
        # Pruned by the collection's sparse_top_k / sparse_mass (searches prune queries the same way).
        row[SPARSE_FIELD] = spec.prune_sparse([to_milvus_sparse(embeddings.sparse[i], row=i)])[0]
        row[METADATA_FIELD] = check_metadata(None if metadata is None else metadata[i], i)
        if spec.chunked:
            assert parent_ids is not None and chunk_indexes is not None
            row[PARENT_FIELD] = check_id(
                parent_ids[i],
                i,
                replace(spec, id_type="varchar"),
                field=PARENT_FIELD,
                unsafe_chars=unsafe,
                engine=caps.display_name,
            )
            row[CHUNK_FIELD] = _check_chunk_index(chunk_indexes[i], i)
        for key, col in columns.items():
            row[key] = check_scalar(declared[key], col[i], i)
            if key == spec.partition_key:
                problem = tenant_value_problem(row[key])
                if problem is not None:
                    raise InputError(
                        f"row {i}: tenant field {key!r}: {row[key]!r} {problem}; the row could never be "
                        "found again by its tenant: use another tenant value",
                        field=key,
                        row=i,
                    )
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- the batch as a whole


def _check_shapes(spec: CollectionSpec, texts: Sequence[str], embeddings: M3Embeddings) -> int:
    """The number of rows: texts is a list, with one M3Embeddings row of the collection's dim per text."""
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string; wrap it: [text]", field="text")
    n = len(texts)
    if not isinstance(embeddings, M3Embeddings):
        raise InputError(
            f"embeddings must be M3Embeddings (from an encoder), got {type(embeddings).__name__}",
            field="embeddings",
        )
    if len(embeddings) != n:
        raise InputError(
            f"{n} texts but {len(embeddings)} embeddings; give one embedding per text", field="embeddings"
        )
    if embeddings.dim != spec.dense_dim:
        raise InputError(
            f"dense vectors have dim {embeddings.dim}, the collection expects {spec.dense_dim}; "
            "encode with the model the collection was built for",
            field="dense",
        )
    return n


def _check_ids_given(spec: CollectionSpec, ids: Sequence[str | int] | None, n: int) -> None:
    if ids is None:
        if not spec.auto_id:
            raise InputError("ids are required (the collection does not use auto_id)", field="id")
        return
    if spec.auto_id:
        raise InputError("the collection uses auto_id: do not pass ids", field="id")
    if len(ids) != n:
        raise InputError(f"{n} texts but {len(ids)} ids; give one id per text", field="id")


def _check_chunk_args(
    spec: CollectionSpec, parent_ids: Sequence[str] | None, chunk_indexes: Sequence[int] | None, n: int
) -> None:
    if spec.chunked:
        if parent_ids is None or chunk_indexes is None or len(parent_ids) != n or len(chunk_indexes) != n:
            raise InputError(
                "a chunked collection needs parent_ids and chunk_indexes, one per text", field=PARENT_FIELD
            )
    elif parent_ids is not None or chunk_indexes is not None:
        raise InputError(
            "parent_ids/chunk_indexes given but the collection is not chunked; create it with chunked=True",
            field=PARENT_FIELD,
        )


def _scalar_columns(
    spec: CollectionSpec, fields: Mapping[str, Sequence[Any]] | None, n: int
) -> dict[str, Sequence[Any]]:
    """The declared-field columns, one value per row: a missing column is all None (its default fills it)."""
    declared = {f.name for f in spec.scalar_fields}
    columns = dict(fields or {})
    for sf in spec.scalar_fields:
        if sf.name not in columns:
            if sf.default is None and not sf.nullable:
                raise InputError(
                    f"declared field {sf.name!r} has no values and no default; pass fields={{{sf.name!r}: [...]}}",
                    field=sf.name,
                )
            columns[sf.name] = [None] * n
    for key, col in columns.items():
        if key not in declared:
            raise InputError(
                f"field {key!r} is not declared on the collection (declared: {sorted(declared) or 'none'}); "
                "put free-form values in metadata instead",
                field=key,
            )
        if len(col) != n:
            raise InputError(f"field {key!r} has {len(col)} values for {n} texts", field=key)
    return columns


def _dense_matrix(embeddings: M3Embeddings) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The dense vectors as float32, every one finite and not all zeros (inner product cannot rank those)."""
    dense = np.asarray(embeddings.dense, dtype=np.float32)
    finite = np.isfinite(dense).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"row {bad}: dense vector holds NaN or inf; re-encode the text or drop the row",
            field="dense",
            row=bad,
        )
    norms = np.linalg.norm(dense, axis=1)
    zero = norms == 0.0
    if zero.any():
        bad = int(np.flatnonzero(zero)[0])
        raise InputError(
            f"row {bad}: dense vector is all zeros; it cannot be ranked by inner product; re-encode the text or drop the row",
            field="dense",
            row=bad,
        )
    return dense


# ------------------------------------------------------------------------- one row's cells


def _unique_id(
    value: Any, row: int, spec: CollectionSpec, unsafe: tuple[str, ...], seen: dict[Any, int], engine: str
) -> str | int:
    checked = check_id(value, row, spec, unsafe_chars=unsafe, engine=engine)
    if checked in seen:
        raise InputError(
            f"row {row}: id {checked!r} repeats row {seen[checked]} in the same batch; "
            "ids must be unique (deduplicate the input or derive ids from content)",
            field="id",
            row=row,
        )
    seen[checked] = row
    return checked


def check_text(text: Any, row: int, spec: CollectionSpec, *, trusted: bool = False) -> str:
    """``text`` if it is a non-empty string without NUL bytes, valid UTF-8 and short enough to store;
    ``trusted`` (a row of ``CheckedTexts``): only its size is left to check."""
    if trusted:
        return _check_text_size(text, row, spec)
    if not isinstance(text, str):
        raise InputError(
            f"row {row}: text must be a string, got {type(text).__name__}", field="text", row=row
        )
    if not text.strip():
        raise InputError(
            f"row {row}: text is empty or whitespace-only; drop the row or give it some text",
            field="text",
            row=row,
        )
    if "\x00" in text:
        raise InputError(
            f"row {row}: text holds a NUL byte; strip control characters first", field="text", row=row
        )
    if not is_valid_utf8(text):
        raise InputError(
            f"row {row}: text is not valid UTF-8 (lone surrogates); fix the input encoding",
            field="text",
            row=row,
        )
    return _check_text_size(text, row, spec)


def _check_text_size(text: str, row: int, spec: CollectionSpec) -> str:
    nbytes = len(text.encode("utf-8"))
    if nbytes > spec.text_max_length:
        raise InputError(
            f"row {row}: text is {nbytes} bytes, the collection stores at most {spec.text_max_length}; "
            "chunk long documents (ingest --chunk-tokens) or create the collection with a larger text_max_length",
            field="text",
            row=row,
        )
    return text


def _check_chunk_index(ci: Any, row: int) -> int:
    if isinstance(ci, bool) or not isinstance(ci, (int, np.integer)) or ci < 0:
        raise InputError(
            f"row {row}: chunk_index must be an int >= 0, got {ci!r}", field=CHUNK_FIELD, row=row
        )
    return int(ci)


def check_id(
    value: Any,
    row: int,
    spec: CollectionSpec,
    *,
    field: str = ID_FIELD,
    unsafe_chars: tuple[str, ...] = (),
    engine: str = "this engine",
) -> str | int:
    """``value`` as an id of this collection's id type. ``unsafe_chars``: characters the engine
    (named ``engine`` in the message) mishandles in varchar ids (``Capabilities.unsafe_id_chars``)."""
    if spec.id_type == "int64":
        return _check_int_id(value, row, field)
    if not isinstance(value, str):
        raise InputError(
            f"row {row}: {field} must be a string for this collection, got {type(value).__name__}; convert with str()",
            field=field,
            row=row,
        )
    if not value.strip():
        raise InputError(
            f"row {row}: {field} is empty; give every document a non-empty id", field=field, row=row
        )
    if "\x00" in value:
        raise InputError(
            f"row {row}: {field} holds a NUL byte; remove the NUL byte from the id", field=field, row=row
        )
    if not is_valid_utf8(value):
        raise InputError(
            f"row {row}: {field} is not valid UTF-8 (lone surrogates); fix the input encoding",
            field=field,
            row=row,
        )
    _check_unsafe_chars(value, row, field, unsafe_chars, engine)
    nbytes = len(value.encode("utf-8"))
    if nbytes > spec.id_max_length:
        raise InputError(
            f"row {row}: {field} is {nbytes} bytes, longer than the collection's id_max_length {spec.id_max_length}; "
            "use shorter ids (e.g. a content hash) or a collection with a larger id_max_length",
            field=field,
            row=row,
        )
    return value


def _check_int_id(value: Any, row: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(
            f"row {row}: {field} must be an int for this collection, got {type(value).__name__}",
            field=field,
            row=row,
        )
    v = int(value)
    if not -(2**63) <= v < 2**63:
        raise InputError(f"row {row}: {field} {v} does not fit in int64", field=field, row=row)
    return v


def _check_unsafe_chars(value: str, row: int, field: str, unsafe_chars: tuple[str, ...], engine: str) -> None:
    if not any(c in value for c in unsafe_chars):
        return
    names = " and a ".join(_CHAR_NAMES.get(c, repr(c)) for c in unsafe_chars if c in value)
    raise InputError(
        f"row {row}: {field} {value!r} holds a {names}, which {engine} mishandles in "
        "its own internal queries (wrong rows or a crashed engine); replace those characters, hash the id, "
        "or use a Milvus server",
        field=field,
        row=row,
    )


def check_metadata(value: Mapping[str, Any] | None, row: int) -> dict[str, Any]:
    """``value`` as the JSON ``metadata`` cell: a dict that round-trips through JSON within Milvus's size limit."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(
            f"row {row}: metadata must be a dict, got {type(value).__name__}", field="metadata", row=row
        )
    problem = json_problem(value)
    if problem is not None:
        raise InputError(f"row {row}: metadata {problem}", field="metadata", row=row)
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"row {row}: metadata is not JSON-serialisable ({exc}); use str/int/float/bool/list/dict values without NaN",
            field="metadata",
            row=row,
        ) from None
    size = len(encoded.encode("utf-8", errors="surrogatepass"))
    if size > MAX_JSON_BYTES:
        raise InputError(
            f"row {row}: metadata is {size} bytes as JSON, Milvus stores at most {MAX_JSON_BYTES}; store large values elsewhere",
            field="metadata",
            row=row,
        )
    result: dict[str, Any] = json.loads(encoded)
    return result


def check_scalar(sf: ScalarField, value: Any, row: int) -> Any:
    """``value`` for the declared field ``sf`` (its default for None), or an InputError."""
    if value is None:
        if sf.default is not None:
            return sf.default
        if not sf.nullable:
            raise InputError(
                f"row {row}: field {sf.name!r} has no value and no default; give a value or declare a default",
                field=sf.name,
                row=row,
            )
        return None
    return _SCALAR_CHECKS[sf.dtype](sf, value, row)


def _varchar(sf: ScalarField, value: Any, row: int) -> str:
    if not isinstance(value, str):
        raise InputError(
            f"row {row}: field {sf.name!r} must be a string, got {type(value).__name__}",
            field=sf.name,
            row=row,
        )
    if not is_valid_utf8(value):
        raise InputError(
            f"row {row}: field {sf.name!r} is not valid UTF-8 (lone surrogates); fix the input encoding",
            field=sf.name,
            row=row,
        )
    if len(value.encode("utf-8")) > sf.max_length:
        raise InputError(
            f"row {row}: field {sf.name!r} is longer than {sf.max_length} bytes", field=sf.name, row=row
        )
    return value


def _int64(sf: ScalarField, value: Any, row: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(
            f"row {row}: field {sf.name!r} must be an int, got {type(value).__name__}", field=sf.name, row=row
        )
    if not -(2**63) <= int(value) < 2**63:
        raise InputError(
            f"row {row}: field {sf.name!r}: {value} does not fit in int64", field=sf.name, row=row
        )
    return int(value)


def _double(sf: ScalarField, value: Any, row: int) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not math.isfinite(float(value))
    ):
        raise InputError(f"row {row}: field {sf.name!r} must be a finite number", field=sf.name, row=row)
    return float(value)


def _bool(sf: ScalarField, value: Any, row: int) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"row {row}: field {sf.name!r} must be a bool", field=sf.name, row=row)
    return bool(value)


_SCALAR_CHECKS: dict[str, Callable[[ScalarField, Any, int], Any]] = {
    "varchar": _varchar,
    "int64": _int64,
    "double": _double,
    "bool": _bool,
}
