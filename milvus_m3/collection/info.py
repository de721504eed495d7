"""What describe() tells about a collection, and the small rules of names and specs the manager checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .schema import CollectionSpec

__all__ = [
    "REGISTRY_COLLECTION",
    "CollectionInfo",
    "check_collection_name",
    "model_key",
    "not_found_message",
]

REGISTRY_COLLECTION = "milvus_m3_models"
"""milvus-m3's own collection of the models first writes recorded (``_model_registry``): a reserved name."""

REUSE_CHECKED = (
    "id_type",
    "auto_id",
    "chunked",
    "scalar_fields",
    "partition_key",
    "bm25",
    "bm25_analyzer",
    "bm25_languages",
    "bm25_language_field",
    "bm25_k1",
    "bm25_b",
    "sparse_top_k",  # queries are pruned as the rows were
    "sparse_mass",
)
"""The spec attributes an existing collection must share with the spec a caller reuses it with."""


@dataclass(frozen=True)
class CollectionInfo:
    """What ``describe`` tells about a collection."""

    name: str
    spec: CollectionSpec | None
    """None for a collection milvus-m3 did not build."""
    built_by_version: str | None
    count: int
    fields: tuple[str, ...]
    indexes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def model_name(self) -> str | None:
        return None if self.spec is None else self.spec.model_name

    @property
    def dense_dim(self) -> int | None:
        return None if self.spec is None else self.spec.dense_dim


def check_collection_name(name: str) -> None:
    """Refuse a name Milvus would refuse (or that could smuggle an expression), with the rule."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
        or not name.isascii()
    ):
        raise ConfigError(
            f"collection name {name!r} is not valid in Milvus: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 255 characters"
        )
    if name == REGISTRY_COLLECTION:
        raise ConfigError(
            f"collection name {name!r} is reserved: milvus-m3 keeps its model registry there (which model "
            "first wrote each collection created without naming one); choose another name"
        )


def not_found_message(name: str, uri: str) -> str:
    return (
        f"collection {name!r} does not exist at {uri}; create it first "
        "(CollectionManager.create_collection or `milvus-m3 create --collection NAME`)"
    )


def model_key(name: str) -> str:
    """Compare models by their last path part, so 'BAAI/bge-m3' matches a local '/models/bge-m3'."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()
