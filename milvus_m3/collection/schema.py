"""What a milvus-m3 collection is made of: field names, ``CollectionSpec``, the build record, schema + indexes.

``CollectionSpec`` shapes a collection; ``build_schema`` / ``build_index_params`` turn it into pymilvus
objects (``function_fields`` adds sparse fields the engine fills from the text, such as BM25); the
build record (model, dims, spec, package version, as JSON in the schema description, which every
Milvus engine keeps, Lite included) lets a later run refuse a mismatched model.

pymilvus is imported inside the two builders only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from .._version import __version__
from ..engine.capabilities import LITE_CAPABILITIES, SERVER_SPARSE_INDEX_ALGOS, Capabilities
from ..errors import ConfigError, SchemaMismatchError
from ..sparse import prune
from ..types import SparseVector
from .bm25 import (
    BM25_ANALYZERS,
    DEFAULT_BM25_ANALYZER,
    DEFAULT_LANGUAGE_FIELD,
    Analyzer,
    bm25_function_fields,
    check_bm25,
    check_bm25_engine,
    check_languages,
    text_field_analyzer,
    with_language_field,
)
from .fields import (
    BM25_FIELD,
    CHUNK_FIELD,
    DENSE_FIELD,
    ID_FIELD,
    MAX_VARCHAR_BYTES,
    META_MARKER,
    METADATA_FIELD,
    PARENT_FIELD,
    RESERVED_FIELDS,
    SPARSE_FIELD,
    TEXT_FIELD,
    FunctionField,
    ScalarField,
)
from .info import (
    CollectionInfo,
    check_collection_name,
    model_key,
    not_found_message,
)
from .legs import legs_of
from .tenancy import with_partition_key

__all__ = [
    "BM25_ANALYZERS",
    "BM25_FIELD",
    "CHUNK_FIELD",
    "DEFAULT_BM25_ANALYZER",
    "DENSE_FIELD",
    "ID_FIELD",
    "METADATA_FIELD",
    "PARENT_FIELD",
    "RESERVED_FIELDS",
    "SPARSE_FIELD",
    "TEXT_FIELD",
    "Analyzer",
    "CollectionInfo",
    "CollectionSpec",
    "FunctionField",
    "ScalarField",
    "build_index_params",
    "build_record",
    "build_schema",
    "check_collection_name",
    "default_output_fields",
    "model_key",
    "not_found_message",
    "parse_build_record",
    "resolve_spec",
]


@dataclass(frozen=True, kw_only=True)
class CollectionSpec:
    """Everything that shapes a collection. Every default is written out here.

    dense_index "auto" means HNSW on a server and AUTOINDEX on Milvus Lite (which only takes FLAT,
    IVF_FLAT and AUTOINDEX). All vector indexes use the inner-product metric: BGE-M3's dense vectors
    are normalised and its lexical score is an inner product.
    """

    dense_dim: int
    model_name: str = "BAAI/bge-m3"
    id_type: Literal["varchar", "int64"] = "varchar"
    id_max_length: int = 512
    auto_id: bool = False
    text_max_length: int = MAX_VARCHAR_BYTES
    dense_index: str = "auto"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    ivf_nlist: int = 1024
    sparse_index: Literal["SPARSE_INVERTED_INDEX", "SPARSE_WAND"] = "SPARSE_INVERTED_INDEX"
    sparse_drop_ratio_build: float = 0.0
    scalar_fields: tuple[ScalarField, ...] = ()
    chunked: bool = False
    consistency_level: Literal["Strong", "Bounded", "Session", "Eventually"] = "Strong"
    num_shards: int | None = None
    partition_key: str | None = None
    """The tenant field (multi-tenancy): a varchar (or int64) field every row must carry; searches, gets
    and deletes given ``tenant=`` see only that tenant's rows. Declared in ``scalar_fields`` or, when
    not, added there as a required varchar field. On a Milvus server it is the partition key."""
    num_partitions: int | None = None
    """Partitions the partition key hashes into (server default 16 when None); needs partition_key."""
    bm25: bool = False
    """Add Milvus's BM25 leg: a ``bm25`` sparse field the engine fills from the text (``bm25_analyzer``)."""
    bm25_analyzer: Analyzer = DEFAULT_BM25_ANALYZER
    bm25_languages: Mapping[str, str] | None = None
    """Milvus's multi-language analyzer instead of ``bm25_analyzer`` (servers >= 2.5.11): language code ->
    analyzer name, ``"default"`` required, e.g. ``{"en": "english", "zh": "chinese", "default": "standard"}``;
    stored read-only in code order. Each row's ``bm25_language_field`` value picks its analyzer."""
    bm25_language_field: str = DEFAULT_LANGUAGE_FIELD
    """The varchar field naming each row's language (with ``bm25_languages``): declared in
    ``scalar_fields`` or, when not, added there as a required varchar field."""
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    model_fingerprint: str | None = None
    """What the model is (``checkpoint.model_fingerprint``: its config and head weights), whatever its path."""
    sparse_top_k: int | None = None
    """At most this many sparse weights per stored text and per query (``prune_sparse``); None: all."""
    sparse_mass: float | None = None
    """The largest sparse weights covering this share, in (0, 1], of each vector's weight; None: all."""
    sparse_inverted_index_algo: str | None = None
    """``inverted_index_algo`` where ``Capabilities.sparse_index_algos`` has it (servers >= 2.5; it
    replaces SPARSE_WAND / drop_ratio_build); None: the engine's default."""

    def __post_init__(self) -> None:
        _check_sparse_options(self)
        object.__setattr__(self, "bm25_languages", check_languages(self))
        fields = with_partition_key(self.scalar_fields, self.partition_key, self.num_partitions)
        fields = with_language_field(fields, self.bm25_languages, self.bm25_language_field)
        object.__setattr__(self, "scalar_fields", fields)
        if (
            isinstance(self.dense_dim, bool)
            or not isinstance(self.dense_dim, int)
            or not 2 <= self.dense_dim <= 32_768
        ):
            raise ConfigError(f"dense_dim must be an int in [2, 32768], got {self.dense_dim!r}")
        if self.id_type not in ("varchar", "int64"):
            raise ConfigError(f"id_type must be 'varchar' or 'int64', got {self.id_type!r}")
        if self.auto_id and self.id_type != "int64":
            raise ConfigError("auto_id needs id_type='int64' (Milvus generates int64 keys)")
        if not 1 <= self.id_max_length <= MAX_VARCHAR_BYTES:
            raise ConfigError(f"id_max_length must be in [1, {MAX_VARCHAR_BYTES}], got {self.id_max_length}")
        if not 1 <= self.text_max_length <= MAX_VARCHAR_BYTES:
            raise ConfigError(
                f"text_max_length must be in [1, {MAX_VARCHAR_BYTES}], got {self.text_max_length}"
            )
        if not 2 <= self.hnsw_m <= 2048:
            raise ConfigError(f"hnsw_m must be in [2, 2048], got {self.hnsw_m}")
        if not 1 <= self.hnsw_ef_construction <= 2**31 - 1:
            raise ConfigError(f"hnsw_ef_construction must be >= 1, got {self.hnsw_ef_construction}")
        if not 0.0 <= self.sparse_drop_ratio_build < 1.0:
            raise ConfigError(
                f"sparse_drop_ratio_build must be in [0, 1), got {self.sparse_drop_ratio_build}"
            )
        if self.sparse_index not in ("SPARSE_INVERTED_INDEX", "SPARSE_WAND"):
            raise ConfigError("sparse_index must be SPARSE_INVERTED_INDEX or SPARSE_WAND")
        names = [f.name for f in self.scalar_fields]
        if len(set(names)) != len(names):
            raise ConfigError(f"scalar field names repeat: {names}")
        check_bm25(self)
        if self.consistency_level not in ("Strong", "Bounded", "Session", "Eventually"):
            raise ConfigError(
                f"consistency_level must be Strong, Bounded, Session or Eventually, got {self.consistency_level!r}"
            )

    @property
    def legs(self) -> tuple[str, ...]:
        """The retrieval legs this collection has: dense, sparse, and bm25 when built with it."""
        return legs_of(self)

    def function_fields(self) -> tuple[FunctionField, ...]:
        """The engine-filled fields of this spec (the BM25 leg), for ``build_schema`` / ``build_index_params``."""
        return bm25_function_fields(self)

    def check_engine(self, caps: Capabilities) -> None:
        """Refuse what this engine accepts at create time but cannot run (a BM25 analyzer, the
        multi-language analyzer, an index type it deprecates), with the fix."""
        check_bm25_engine(self, caps)
        if self.sparse_index == "SPARSE_WAND" and caps.sparse_wand_deprecated:
            raise ConfigError(
                f"sparse_index='SPARSE_WAND' is deprecated on {caps.display_name} (Milvus 2.5+); use "
                "sparse_index='SPARSE_INVERTED_INDEX' with sparse_inverted_index_algo='DAAT_WAND' "
                "(--sparse-inverted-index-algo DAAT_WAND), which builds the same WAND search"
            )

    def prune_sparse(self, vectors: Sequence[SparseVector]) -> list[SparseVector]:
        """``vectors`` pruned by ``sparse_top_k`` / ``sparse_mass``: the one place stored texts (``_rows``)
        and queries (``search.execute``) are pruned, so both follow the build record."""
        return [prune(v, top_k=self.sparse_top_k, mass=self.sparse_mass) for v in vectors]

    def sparse_index_params(self, caps: Capabilities) -> dict[str, Any]:
        """The learned-sparse index's build parameters on an engine with ``caps``."""
        params: dict[str, Any] = {"drop_ratio_build": self.sparse_drop_ratio_build}
        algo = self.sparse_inverted_index_algo
        if algo is None:
            return params
        if algo not in caps.sparse_index_algos:
            raise ConfigError(
                f"sparse_inverted_index_algo {algo!r} is not available on {caps.display_name}; "
                "leave it unset for the engine's default (a Milvus server >= 2.5 takes it)"
            )
        if self.sparse_drop_ratio_build == 0.0:  # deprecated with inverted_index_algo; 0.0 is a no-op
            return {"inverted_index_algo": algo}
        return params | {"inverted_index_algo": algo}

    def resolved_dense_index(self, caps: Capabilities) -> str:
        kind = caps.default_dense_index if self.dense_index.lower() == "auto" else self.dense_index.upper()
        if kind not in caps.dense_index_types:
            raise ConfigError(
                f"dense_index {self.dense_index!r} is not available on {caps.display_name}; use one of "
                f"{', '.join(caps.dense_index_types)} (or 'auto')"
            )
        return kind

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scalar_fields"] = [asdict(f) for f in self.scalar_fields]
        data["bm25_languages"] = None if self.bm25_languages is None else dict(self.bm25_languages)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CollectionSpec:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["scalar_fields"] = tuple(ScalarField(**f) for f in data.get("scalar_fields", ()))
        return cls(**kwargs)


def _check_sparse_options(spec: CollectionSpec) -> None:
    k, mass, algo = spec.sparse_top_k, spec.sparse_mass, spec.sparse_inverted_index_algo
    if k is not None and (type(k) is not int or k < 1):
        raise ConfigError(f"sparse_top_k must be an int >= 1 (or None: keep all weights), got {k!r}")
    if mass is not None and (type(mass) not in (int, float) or not 0 < mass <= 1):
        raise ConfigError(f"sparse_mass must be in (0, 1] (or None: keep all weights), got {mass!r}")
    if algo is not None and (
        algo not in SERVER_SPARSE_INDEX_ALGOS or spec.sparse_index != "SPARSE_INVERTED_INDEX"
    ):
        raise ConfigError(
            f"sparse_inverted_index_algo must be one of {', '.join(SERVER_SPARSE_INDEX_ALGOS)} with "
            f"sparse_index='SPARSE_INVERTED_INDEX' (or None), got {algo!r} with {spec.sparse_index!r}"
        )


def build_record(spec: CollectionSpec) -> str:
    """The collection description: a marker and the JSON record of what built the collection."""
    # build_id: a new one per created collection, so a checkpoint of a dropped one is not resumed into it
    meta = {
        "package": "milvus-m3",
        "version": __version__,
        "spec": spec.to_json(),
        "build_id": uuid.uuid4().hex,
    }
    return META_MARKER + json.dumps(meta, sort_keys=True, separators=(",", ":"))


def build_schema(
    spec: CollectionSpec, caps: Capabilities, *, function_fields: Sequence[FunctionField] = ()
) -> Any:
    """The pymilvus schema of a milvus-m3 collection, its build record in the description.

    ``function_fields``: sparse fields the engine fills from the text field (BM25); the text field then
    gets each one's analyzer (all must agree).
    """
    from pymilvus import DataType, MilvusClient

    function_fields = (*spec.function_fields(), *function_fields)
    schema = MilvusClient.create_schema(
        auto_id=spec.auto_id, enable_dynamic_field=False, description=build_record(spec)
    )
    if spec.id_type == "varchar":
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=spec.id_max_length)
    else:
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(
        TEXT_FIELD, DataType.VARCHAR, max_length=spec.text_max_length, **text_field_analyzer(function_fields)
    )
    schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=spec.dense_dim)
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field(METADATA_FIELD, DataType.JSON)
    if spec.chunked:
        schema.add_field(PARENT_FIELD, DataType.VARCHAR, max_length=spec.id_max_length)
        schema.add_field(CHUNK_FIELD, DataType.INT64)
    types = {
        "varchar": DataType.VARCHAR,
        "int64": DataType.INT64,
        "double": DataType.DOUBLE,
        "bool": DataType.BOOL,
    }
    for sf in spec.scalar_fields:
        extra: dict[str, Any] = {"nullable": True} if sf.nullable else {}
        if sf.name == spec.partition_key and caps.partition_key:
            extra["is_partition_key"] = True
        if sf.nullable and not caps.nullable_fields:
            raise ConfigError(
                f"scalar field {sf.name!r}: {caps.display_name} does not support nullable fields; give it a "
                "default (ScalarField(default=...)) or use a Milvus server"
            )
        if sf.dtype == "varchar":
            extra["max_length"] = sf.max_length
        schema.add_field(sf.name, types[sf.dtype], **extra)
    if function_fields:
        from pymilvus import Function, FunctionType

        for ff in function_fields:
            schema.add_field(ff.name, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=ff.function_name,
                    function_type=getattr(FunctionType, ff.function),
                    input_field_names=[TEXT_FIELD],
                    output_field_names=[ff.name],
                )
            )
    return schema


def build_index_params(
    spec: CollectionSpec,
    dense_index: str,
    *,
    function_fields: Sequence[FunctionField] = (),
    caps: Capabilities | None = None,
) -> Any:
    """Index parameters: the dense field (``dense_index``, IP), the sparse field (IP), and each function field."""
    from pymilvus import MilvusClient

    function_fields = (*spec.function_fields(), *function_fields)
    params = MilvusClient.prepare_index_params()
    dense_params: dict[str, Any] = {}
    if dense_index == "HNSW":
        dense_params = {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction}
    elif dense_index.startswith("IVF"):
        dense_params = {"nlist": spec.ivf_nlist}
    params.add_index(field_name=DENSE_FIELD, index_type=dense_index, metric_type="IP", params=dense_params)
    params.add_index(
        field_name=SPARSE_FIELD,
        index_type=spec.sparse_index,
        metric_type="IP",
        params=spec.sparse_index_params(caps or LITE_CAPABILITIES),
    )
    for ff in function_fields:
        params.add_index(
            field_name=ff.name,
            index_type=ff.index_type,
            metric_type=ff.metric_type,
            params=dict(ff.index_params),
        )
    return params


def default_output_fields(spec: CollectionSpec) -> list[str]:
    out = [TEXT_FIELD, METADATA_FIELD]
    if spec.chunked:
        out += [PARENT_FIELD, CHUNK_FIELD]
    out += [f.name for f in spec.scalar_fields]
    return out


def parse_build_record(description: str) -> tuple[CollectionSpec | None, str | None]:
    """(spec, milvus-m3 version) from a collection description; (None, None) when milvus-m3 did not build it."""
    if not description.startswith(META_MARKER):
        return None, None
    try:
        meta = json.loads(description[len(META_MARKER) :])
        return CollectionSpec.from_json(meta["spec"]), str(meta.get("version"))
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise SchemaMismatchError(
            f"the milvus-m3 record in the collection description is unreadable ({exc}); recreate the collection"
        ) from exc


# ---------------------------------------- schema_check
# Does a collection's real schema match the milvus-m3 record in its description?
#
# A record can disagree with the schema it sits on (a collection built by hand, or by another tool, with
# a record copied from a milvus-m3 one): rows would then be written and every search would fail. So
# ``CollectionManager.spec`` checks the fields the record promises (name, type, dense dim, text and id
# lengths) against ``describe_collection`` before the spec is trusted. Extra fields are allowed (e.g.
# function outputs); missing or different ones are a SchemaMismatchError naming the field.
#
# Also here: the build id, a random token milvus-m3 writes into the record when it creates a collection,
# so that a checkpoint of a dropped and recreated collection is not resumed into the new one.
#
# Private to ``collection.py``; it reads the dict pymilvus returns, and imports neither pymilvus nor torch.

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
    for fname, (dtype, params) in _expected(spec).items():
        got = fields.get(fname)
        if got is None:
            raise SchemaMismatchError(
                f"collection {name!r}: its milvus-m3 record needs a field {fname!r}, which it lacks; {fix}"
            )
        if _type_name(got.get("type")) != dtype:
            raise SchemaMismatchError(
                f"collection {name!r}: field {fname!r} is {_type_name(got.get('type'))}, its milvus-m3 record says {dtype}; {fix}"
            )
        real = got.get("params") or {}
        for key, value in params.items():
            if key in real and int(real[key]) != value:
                raise SchemaMismatchError(
                    f"collection {name!r}: field {fname!r} has {key} {real[key]}, its milvus-m3 record says {value}; {fix}"
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


def resolve_spec(
    spec: CollectionSpec | None,
    dense_dim: int | None,
    model_name: str | None,
    *,
    bm25: bool | None = None,
    model_fingerprint: str | None = None,
) -> CollectionSpec:
    """The spec ``create_collection`` builds from: ``spec``, or defaults around ``dense_dim``.

    Without a spec, a model named by neither ``model_name`` nor ``model_fingerprint`` is recorded as
    unknown (an empty name), never as the default model: a later check compares dims only.
    """
    if spec is None:
        if dense_dim is None:
            raise ConfigError("create_collection needs dense_dim (embedder.dense_dim) or a CollectionSpec")
        spec = CollectionSpec(dense_dim=dense_dim, model_name=model_name or "")
    elif dense_dim is not None and dense_dim != spec.dense_dim:
        raise ConfigError(f"dense_dim={dense_dim} disagrees with spec.dense_dim={spec.dense_dim}")
    elif model_name is not None and model_name != spec.model_name:
        spec = replace(spec, model_name=model_name)
    if bm25 is not None and bm25 != spec.bm25:
        spec = replace(spec, bm25=bm25)
    if model_fingerprint is not None:
        spec = replace(spec, model_fingerprint=model_fingerprint)
    return spec
