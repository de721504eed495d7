"""The model registry: which model first wrote a collection that was created without naming one.

A collection's build record (its description) cannot change after create on Milvus Lite 2.5.1 (every
alter call answers UNIMPLEMENTED), so the identity a first write brings is kept in a collection of
its own in the same database, ``milvus_m3_models``, owned by milvus-m3 and created only when a first
write needs it. A row holds a data collection's ``build_id`` (its record's random token: a collection
dropped by hand and recreated under the same name has another, so it never inherits a stale row),
its name, the model's name and fingerprint, and the milvus-m3 version that wrote the row.

Milvus has no compare-and-set, and rows with one primary key are not unique: a query answers the
latest of them only (measured on Lite 2.5.1: two inserts of one key, ``count(*)`` 2, the query 1 row),
which would hide a racing first writer. So the primary key is the build id AND the identity
(``record_id``): two writers recording different models leave two rows, each writer reads back every
row of the build id, and a writer that sees another model withdraws its own row and is refused. At
most one of two racing writers passes (a writer that saw only its own row wrote before the other's
read); when both see both, both are refused and neither writes.

Private to ``collection.py``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._version import __version__
from ..errors import ConfigError, MilvusM3Error, SchemaMismatchError
from .fields import MAX_VARCHAR_BYTES
from .identity import same_model
from .info import REGISTRY_COLLECTION, model_key
from .schema import CollectionSpec

__all__ = ["RECREATE", "REGISTRY_COLLECTION", "ModelRegistry", "Recorded", "is_unknown", "show"]

logger = logging.getLogger("milvus_m3.collection")

REGISTRY_DESCRIPTION = (
    "milvus-m3 model registry: the model that first wrote each milvus-m3 collection created without "
    "naming one, keyed by the collection's build id. Owned by milvus-m3: do not write, alter or drop it."
)
RECREATE = "recreate the collection (recreate=True / --recreate; its data is dropped)"
FIX = f"use the model that first wrote it, or {RECREATE}"
_FIELDS = ("build_id", "collection", "model_name", "model_fingerprint", "recorded_by")
_BUILD_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


@dataclass(frozen=True)
class Recorded:
    """One registry row: the model a first write recorded for a build id."""

    collection: str
    model_name: str
    model_fingerprint: str | None
    recorded_by: str

    def same_model(self, other: Recorded) -> bool:
        """``_identity.same_model``: the rule ``check_model`` applies."""
        return same_model(self.model_name, self.model_fingerprint, other.model_name, other.model_fingerprint)


def is_unknown(spec: CollectionSpec) -> bool:
    """A spec whose record names no model (created without one): checked by dims only until a first write."""
    return not spec.model_name and spec.model_fingerprint is None


def show(model_name: str | None, fingerprint: str | None) -> str:
    """A model as an error names it: its name and its fingerprint's first 12 characters."""
    return f"{model_name or '(no name)'!r} (fingerprint {fingerprint[:12] if fingerprint else 'none'})"


def _record_id(build_id: str, rec: Recorded) -> str:
    what = f"fp:{rec.model_fingerprint}" if rec.model_fingerprint else f"name:{model_key(rec.model_name)}"
    return f"{build_id}.{hashlib.sha256(what.encode('utf-8')).hexdigest()[:24]}"


def _check_build_id(name: str, build_id: str) -> str:
    if not _BUILD_ID.fullmatch(build_id):
        raise SchemaMismatchError(
            f"collection {name!r}: the build id in its milvus-m3 record ({build_id[:70]!r}) is not one milvus-m3 "
            f"writes; {RECREATE}"
        )
    return build_id


def _check_ours(desc: Any) -> None:
    """SchemaMismatchError unless ``desc`` (describe_collection's answer) is milvus-m3's registry."""
    fields = {str(f.get("name")) for f in desc.get("fields", [])} if isinstance(desc, dict) else set()
    if {"record_id", *_FIELDS} <= fields:  # the description may differ between releases
        return
    raise SchemaMismatchError(
        f"the collection {REGISTRY_COLLECTION!r} in this database is not milvus-m3's model registry "
        f"(fields {', '.join(sorted(fields)) or 'none'}; another schema): milvus-m3 keeps there the model "
        "that first wrote each collection created without naming one, and reserves that name. Rename or "
        f"drop that collection (after moving its data), or use another database (--db-name); a collection "
        "created with its model named (--model, CollectionSpec.model_name) does not need the registry"
    )


class ModelRegistry:
    """The registry collection of one database, through the manager's retried ``call(what, method, ...)``."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call
        self._exists = False  # once seen it stays: milvus-m3 never drops it

    def exists(self) -> bool:
        """Whether the registry exists; SchemaMismatchError when a collection of its name is not it."""
        if not self._exists:
            found = bool(self._call("look for the model registry", "has_collection", REGISTRY_COLLECTION))
            if found:
                desc = self._call("describe the model registry", "describe_collection", REGISTRY_COLLECTION)
                _check_ours(desc)
            self._exists = found
        return self._exists

    def lookup(self, name: str, build_id: str) -> list[Recorded]:
        """Every row recorded for ``build_id`` (none while the registry does not exist)."""
        if not self.exists():
            return []
        rows = self._call(
            f"read the model recorded for {name!r}",
            "query",
            collection_name=REGISTRY_COLLECTION,
            filter=f'build_id == "{_check_build_id(name, build_id)}"',
            output_fields=list(_FIELDS),
        )
        return sorted(
            (
                Recorded(
                    collection=str(r["collection"]),
                    model_name=str(r["model_name"]),
                    model_fingerprint=str(r["model_fingerprint"]) or None,
                    recorded_by=str(r["recorded_by"]),
                )
                for r in rows
            ),
            key=lambda r: (r.model_fingerprint is None, r.model_fingerprint or "", r.model_name),
        )

    def merged(self, name: str, spec: CollectionSpec, build_id: str | None) -> CollectionSpec:
        """``spec`` with the model a first write recorded; unchanged when it names one, has no build id
        (an older record: dims only) or nothing is recorded yet."""
        if not is_unknown(spec) or build_id is None:
            return spec
        rows = self.lookup(name, build_id)
        return spec if not rows else _with(spec, agreed(name, rows))

    def record(
        self, name: str, spec: CollectionSpec, build_id: str, model_name: str, fingerprint: str | None
    ) -> CollectionSpec:
        """Record the first writer's model for ``build_id`` and return ``spec`` with it; refused
        (SchemaMismatchError, own row withdrawn) when another model is recorded for it."""
        mine = Recorded(
            collection=name, model_name=model_name, model_fingerprint=fingerprint, recorded_by=__version__
        )
        if len(model_name.encode("utf-8")) > MAX_VARCHAR_BYTES:
            raise ConfigError(
                f"model name of {len(model_name)} characters is too long to record; name it shorter"
            )
        self._create()
        key = _record_id(_check_build_id(name, build_id), mine)
        row = {
            "record_id": key,
            "build_id": build_id,
            "collection": name,
            "model_name": model_name,
            "model_fingerprint": fingerprint or "",
            "recorded_by": __version__,
            "vector": [1.0, 0.0],
        }
        # one key per (build id, model): an upsert of it is idempotent, so it is retried
        self._call(f"record the model of {name!r}", "upsert", collection_name=REGISTRY_COLLECTION, data=[row])
        rows = self.lookup(name, build_id)
        others = [r for r in rows if not r.same_model(mine)]
        if others:
            self._call(
                f"withdraw the model recorded for {name!r}",
                "delete",
                collection_name=REGISTRY_COLLECTION,
                ids=[key],
            )
            raise SchemaMismatchError(
                f"collection {name!r} has model {show(others[0].model_name, others[0].model_fingerprint)} recorded "
                f"by another first writer, not {show(model_name, fingerprint)}: their vectors are not comparable; "
                f"{FIX} (when that writer was refused too, as two writers at the same time may both be, retry)"
            )
        logger.info(
            "recorded model %s for collection %r (its first write)", show(model_name, fingerprint), name
        )
        return _with(spec, agreed(name, rows or [mine]))

    def forget(self, name: str, build_id: str | None) -> None:
        """Delete the rows of a dropped collection's ``build_id`` (the registry itself stays)."""
        if build_id is None:
            return
        try:
            if self.exists():
                self._call(
                    f"delete the model recorded for {name!r}",
                    "delete",
                    collection_name=REGISTRY_COLLECTION,
                    filter=f'build_id == "{_check_build_id(name, build_id)}"',
                )
        except MilvusM3Error as exc:
            # harmless: the rows are keyed by the dropped collection's build id, which no other has
            logger.warning("collection %r dropped, its model registry rows were not deleted (%s)", name, exc)

    def _create(self) -> None:
        if self.exists():
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=REGISTRY_DESCRIPTION
        )
        schema.add_field("record_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("build_id", DataType.VARCHAR, max_length=64)
        schema.add_field("collection", DataType.VARCHAR, max_length=255)
        schema.add_field("model_name", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("model_fingerprint", DataType.VARCHAR, max_length=128)
        schema.add_field("recorded_by", DataType.VARCHAR, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        try:
            self._call(
                "create the model registry",
                "create_collection",
                collection_name=REGISTRY_COLLECTION,
                schema=schema,
                index_params=index,
                consistency_level="Strong",
            )
        except MilvusM3Error:
            self._exists = False
            if not self.exists():  # not another writer creating it at the same time
                raise
        self._exists = True
        logger.info("created the model registry collection %r", REGISTRY_COLLECTION)


def agreed(name: str, rows: Sequence[Recorded]) -> Recorded:
    """The one model ``rows`` record (one with a fingerprint first); SchemaMismatchError naming two of
    them when they disagree (racing first writers, one of which stopped before withdrawing its row)."""
    first = rows[0]
    for other in rows[1:]:
        if not first.same_model(other):
            raise SchemaMismatchError(
                f"collection {name!r} has two models recorded as its first writer, "
                f"{show(first.model_name, first.model_fingerprint)} and {show(other.model_name, other.model_fingerprint)} "
                f"(two first writes at the same time): {FIX}"
            )
    return first


def _with(spec: CollectionSpec, rec: Recorded) -> CollectionSpec:
    return replace(spec, model_name=rec.model_name, model_fingerprint=rec.model_fingerprint)
