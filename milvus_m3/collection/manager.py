"""CollectionManager: a collection's lifecycle (create, check, describe, drop) and its validated writes and reads.

What a collection is made of (spec, schema, indexes, the build record) is schema.py; the per-row
checks are _rows.py; talking to Milvus (retries, engine detection) is connection.py. A collection
built by milvus-m3 records what built it, and a later run checks an existing collection against the
embedder and spec and refuses a mismatch with the fix in the message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.capabilities import Capabilities
from ..engine.connection import Connection, ConnectionOptions, quiet_rpc_error_log
from ..errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConfigError,
    FilterError,
    MilvusM3Error,
    SchemaMismatchError,
)
from ..types import M3Embeddings
from . import rows as _rows
from .bm25 import analyzer_label
from .fields import META_MARKER
from .identity import check_model
from .info import REUSE_CHECKED
from .registry import RECREATE, REGISTRY_COLLECTION, ModelRegistry, is_unknown
from .rows import check_id
from .schema import (
    ID_FIELD,
    CollectionInfo,
    CollectionSpec,
    ScalarField,
    build_index_params,
    build_schema,
    check_collection_name,
    check_schema_matches,
    default_output_fields,
    not_found_message,
    parse_build_record,
    record_build_id,
    resolve_spec,
)
from .tenancy import (
    check_owners,
    check_partition_names,
    check_tenant,
    check_tenant_rows,
    check_written_owners,
    delete_count,
    ids_filter,
    owner_lock,
    owners_query,
    scoped_expr,
    tenant_fields,
)

__all__ = [
    "CollectionInfo",
    "CollectionManager",
    "CollectionSpec",
    "Read",
    "ScalarField",
    "delete_filter",
    "read_request",
    "upsert_rows",
]

logger = logging.getLogger("milvus_m3.collection")

DEFAULT_WRITE_BATCH = 256


class CollectionManager:
    """Creates, checks, fills and drops milvus-m3 collections on Milvus Lite or a Milvus server.

    ``uri`` is a Milvus Lite file (``./milvus_m3.db``, the embedded default) or a server URI
    (``http://localhost:19530``) with ``token`` or ``user``/``password``. ``options`` (a
    ``ConnectionOptions``) and ``option_kwargs`` (its field names: ``token=``, ``timeout=``, ``retry=``,
    ...) say how to connect; or pass an open ``connection``.
    """

    def __init__(
        self,
        uri: str = "./milvus_m3.db",
        *,
        options: ConnectionOptions | None = None,
        connection: Connection | None = None,
        **option_kwargs: Any,
    ) -> None:
        if connection is None:
            connection = Connection(uri, options, **option_kwargs)
        elif options is not None or option_kwargs:
            ConnectionOptions.of(options, **option_kwargs)  # an unknown name is still named
            raise ConfigError(
                "give connection= or connection options (options=, token=, retry=, ...), not both: "
                "a Connection carries its own options"
            )
        self.connection = connection
        self._specs: dict[str, CollectionSpec | None] = {}
        self._registry = ModelRegistry(self._call)
        self._first_written: set[str] = set()  # cached specs whose model a first write recorded

    def __repr__(self) -> str:
        return f"CollectionManager(uri={self.connection.display_uri!r})"

    def __enter__(self) -> CollectionManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uri(self) -> str:
        return self.connection.display_uri

    @property
    def capabilities(self) -> Capabilities:
        return self.connection.capabilities

    @property
    def client(self) -> Any:
        return self.connection.client

    def close(self) -> None:
        self.connection.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.connection.client, method)
        return self.connection.call(what, fn, *args, **kwargs)

    # ----------------------------------------------------------------- lifecycle

    def list_collections(self) -> list[str]:
        """The collections of the database, less milvus-m3's model registry (``milvus_m3_models``)."""
        return sorted(
            n for n in self._call("list collections", "list_collections") if n != REGISTRY_COLLECTION
        )

    def has_collection(self, name: str) -> bool:
        check_collection_name(name)
        return bool(self._call(f"has collection {name!r}", "has_collection", name))

    def create_collection(
        self,
        name: str,
        *,
        dense_dim: int | None = None,
        spec: CollectionSpec | None = None,
        model_name: str | None = None,
        exists_ok: bool = False,
        recreate: bool = False,
        bm25: bool | None = None,
        model_fingerprint: str | None = None,
    ) -> CollectionInfo:
        """Create ``name`` from ``spec`` (or from ``dense_dim`` with defaults for the rest).

        exists_ok: an existing collection is checked against the spec and kept.
        recreate: an existing collection is dropped first (its data is lost).
        bm25: add (or not) Milvus's BM25 leg (``CollectionSpec.bm25``; analyzer from the spec).
        model_fingerprint: the model's identity (``encoder.model_fingerprint``), recorded and checked.
        A model given by no name and no fingerprint is recorded as unknown: it is then checked by dims only.
        """
        check_collection_name(name)
        if exists_ok and recreate:
            raise ConfigError("give exists_ok or recreate, not both")
        spec = resolve_spec(spec, dense_dim, model_name, bm25=bm25, model_fingerprint=model_fingerprint)
        caps = self.capabilities
        dense_index = spec.resolved_dense_index(caps)
        spec.check_engine(caps)
        if is_unknown(spec):
            self._registry.exists()  # a foreign collection under the registry's name: refused before create
        if self.has_collection(name):
            if recreate:
                logger.info("dropping collection %r to recreate it", name)
                self.drop(name)
            elif exists_ok:
                self.check_collection(name, spec=spec)
                return self.describe(name)
            else:
                raise CollectionExistsError(
                    f"collection {name!r} already exists at {self.uri}; pass exists_ok=True to reuse it "
                    "(it is checked against the spec), recreate=True (--recreate) to drop and rebuild it, "
                    "or choose another name"
                )
        schema = build_schema(spec, caps)
        index_params = build_index_params(spec, dense_index, caps=caps)
        kwargs: dict[str, Any] = {"consistency_level": spec.consistency_level}
        if spec.num_shards is not None:
            kwargs["num_shards"] = spec.num_shards
        if spec.num_partitions is not None and caps.partition_key:
            kwargs["num_partitions"] = spec.num_partitions
        self._call(
            f"create collection {name!r}",
            "create_collection",
            collection_name=name,
            schema=schema,
            index_params=index_params,
            **kwargs,
        )
        self._specs[name] = spec
        logger.info(
            "created collection %r (dense %d-d %s, sparse %s%s)",
            name,
            spec.dense_dim,
            dense_index,
            spec.sparse_index,
            f", bm25 {analyzer_label(spec)}" if spec.bm25 else "",
        )
        return self.describe(name)

    def drop(self, name: str, *, missing_ok: bool = False) -> bool:
        """Drop ``name`` (and the model its first write recorded); False when missing and missing_ok."""
        if not self.has_collection(name):
            if missing_ok:
                return False
            raise CollectionNotFoundError(not_found_message(name, self.uri))
        build_id = self.build_id(name)
        self._call(f"drop collection {name!r}", "drop_collection", name)
        self._specs.pop(name, None)
        self._registry.forget(name, build_id)  # after the drop: a failed drop keeps its model
        return True

    def count(self, name: str) -> int:
        self._require(name)
        res = self._call(
            f"count {name!r}", "query", collection_name=name, filter="", output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"])

    def describe(self, name: str) -> CollectionInfo:
        self._require(name)
        spec, version, desc = self._read(name)
        indexes: dict[str, Mapping[str, Any]] = {}
        for idx in self._call(f"list indexes of {name!r}", "list_indexes", name):
            info = self._call(f"describe index {idx!r}", "describe_index", name, idx)
            indexes[str(info.get("field_name", idx))] = {
                k: v
                for k, v in info.items()
                if k in ("index_type", "metric_type", "M", "efConstruction", "nlist", "drop_ratio_build")
            }
        return CollectionInfo(
            name=name,
            spec=spec,
            built_by_version=version,
            count=self.count(name),
            fields=tuple(f["name"] for f in desc.get("fields", [])),
            indexes=indexes,
        )

    def _read(self, name: str) -> tuple[CollectionSpec | None, str | None, Mapping[str, Any]]:
        """(spec with the model a first write recorded, milvus-m3 version, describe_collection's answer)."""
        desc = self._call(f"describe {name!r}", "describe_collection", name)
        description = desc.get("description", "")
        spec, version = parse_build_record(description)
        self._first_written.discard(name)
        if spec is not None:
            check_schema_matches(name, spec, desc)
            merged = self._registry.merged(name, spec, record_build_id(description))
            if merged is not spec:
                self._first_written.add(name)
            spec = merged
        self._specs[name] = spec
        return spec, version, desc

    def spec(self, name: str) -> CollectionSpec:
        """The spec a milvus-m3 collection was built with (cached after the first read); for one created
        without naming its model, the model its first write recorded (none before that write)."""
        if name not in self._specs:
            self._require(name)
            self._read(name)
        spec = self._specs[name]
        if spec is None:
            raise SchemaMismatchError(
                f"collection {name!r} was not built by milvus-m3 (no '{META_MARKER}' record in its description); "
                "create a new collection with milvus-m3 (CollectionManager.create_collection / milvus-m3 create)"
            )
        return spec

    def build_id(self, name: str) -> str | None:
        """The token milvus-m3 wrote into ``name``'s record when it created it (None for older records):
        a dropped and recreated collection has a new one, so its old checkpoint is not resumed into it."""
        self._require(name)
        return record_build_id(
            self._call(f"describe {name!r}", "describe_collection", name).get("description", "")
        )

    def collection_id(self, name: str) -> int | None:
        """The id the engine gave this instance of ``name``: a collection dropped and created again has
        another one, whatever schema and description it was given. None where the engine gives none
        (Milvus Lite reports 0 for every collection)."""
        self._require(name)
        value = self._call(f"describe {name!r}", "describe_collection", name).get("collection_id")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def check_collection(
        self,
        name: str,
        *,
        spec: CollectionSpec | None = None,
        dense_dim: int | None = None,
        model_name: str | None = None,
        model_fingerprint: str | None = None,
        record_model: bool = False,
    ) -> CollectionSpec:
        """Check an existing collection against what the caller is about to write or search with.

        Models are the same when their fingerprints agree (any path or hub id); without a fingerprint on
        both sides, by the last part of their name. A collection created without naming its model takes
        the model of its first write: ``record_model`` (writers) records the caller's model when none
        is yet (in the ``milvus_m3_models`` registry, by build id); until then, and for records older
        than build ids, it is checked by dims only.
        """
        stored = self.spec(name)
        if is_unknown(stored):  # another writer may have recorded its model since it was read
            stored = self._read(name)[0] or stored
        want_dim = spec.dense_dim if spec is not None else dense_dim
        want_model = spec.model_name if spec is not None else model_name
        want_print = spec.model_fingerprint if spec is not None else model_fingerprint
        fix = "use a new collection name, or recreate it (recreate=True / --recreate; its data is dropped)"
        if want_dim is not None and stored.dense_dim != want_dim:
            raise SchemaMismatchError(
                f"collection {name!r} has dense dim {stored.dense_dim}, the embedder gives {want_dim}; {fix}"
            )
        first = name in self._first_written
        check_model(name, stored, want_model, want_print, RECREATE if first else fix, first_write=first)
        if spec is not None:
            for attr in REUSE_CHECKED:
                if getattr(stored, attr) != getattr(spec, attr):
                    raise SchemaMismatchError(
                        f"collection {name!r} has {attr}={getattr(stored, attr)!r}, the spec asks for "
                        f"{getattr(spec, attr)!r}; {fix}"
                    )
        if record_model and is_unknown(stored) and (want_model or want_print):
            build_id = self.build_id(name)
            if build_id is not None:  # an older record: dims only, nothing recorded
                stored = self._registry.record(name, stored, build_id, want_model or "", want_print)
                self._specs[name] = stored
                self._first_written.add(name)
        return stored

    def _require(self, name: str) -> None:
        if not self.has_collection(name):
            raise CollectionNotFoundError(not_found_message(name, self.uri))

    # ----------------------------------------------------------------- writes

    def upsert(
        self,
        name: str,
        *,
        ids: Sequence[str | int] | None,
        texts: Sequence[str],
        embeddings: M3Embeddings,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        fields: Mapping[str, Sequence[Any]] | None = None,
        parent_ids: Sequence[str] | None = None,
        chunk_indexes: Sequence[int] | None = None,
        batch_size: int = DEFAULT_WRITE_BATCH,
        tenant: str | int | None = None,
        partition_name: str | None = None,
    ) -> int:
        """Insert or replace rows by id. Every row is validated before anything is written.

        Returns the number of rows written. With an auto-id collection use ``insert``. ``tenant``: the
        tenant of every row (a collection with a partition key); an id stored for another tenant is
        refused, never replaced. ``partition_name``: a named partition (Milvus servers).
        """
        spec = self.spec(name)
        if spec.auto_id:
            raise ConfigError(f"collection {name!r} uses auto_id: use insert(), which lets Milvus assign ids")
        rows = upsert_rows(
            spec,
            self.capabilities,
            name,
            ids=ids,
            texts=texts,
            embeddings=embeddings,
            metadata=metadata,
            fields=fields,
            parent_ids=parent_ids,
            chunk_indexes=chunk_indexes,
            tenant=tenant,
        )
        return self.write_rows(
            name, rows, batch_size=batch_size, mode="upsert", partition_names=partition_name
        )

    def insert(
        self,
        name: str,
        *,
        texts: Sequence[str],
        embeddings: M3Embeddings,
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        fields: Mapping[str, Sequence[Any]] | None = None,
        parent_ids: Sequence[str] | None = None,
        chunk_indexes: Sequence[int] | None = None,
        batch_size: int = DEFAULT_WRITE_BATCH,
    ) -> int:
        """Insert rows (no replacement: an existing id is stored twice). Prefer upsert for re-runnable jobs."""
        spec = self.spec(name)
        rows = self.prepare_rows(
            spec,
            ids=ids,
            texts=texts,
            embeddings=embeddings,
            metadata=metadata,
            fields=fields,
            parent_ids=parent_ids,
            chunk_indexes=chunk_indexes,
        )
        return self.write_rows(name, rows, batch_size=batch_size, mode="insert")

    def prepare_rows(
        self,
        spec: CollectionSpec,
        *,
        ids: Sequence[str | int] | None,
        texts: Sequence[str],
        embeddings: M3Embeddings,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        fields: Mapping[str, Sequence[Any]] | None = None,
        parent_ids: Sequence[str] | None = None,
        chunk_indexes: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Validate a batch and build Milvus rows. Raises InputError naming the field and row."""
        return _rows.prepare_rows(
            spec,
            self.capabilities,
            ids=ids,
            texts=texts,
            embeddings=embeddings,
            metadata=metadata,
            fields=fields,
            parent_ids=parent_ids,
            chunk_indexes=chunk_indexes,
        )

    def write_rows(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = DEFAULT_WRITE_BATCH,
        mode: str = "upsert",
        partition_names: str | Sequence[str] | None = None,
    ) -> int:
        """Write prepared rows in batches, each retried on transient failures (upsert is idempotent).

        On a collection with a partition key, an upsert batch whose id is stored for another tenant is
        refused (InputError naming the row) before it is written."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        extra = self._partition_kwargs(partition_names, key="partition_name")
        written = 0
        owners = mode == "upsert" and self.spec(name).partition_key is not None
        for start in range(0, len(rows), batch_size):
            chunk = list(rows[start : start + batch_size])
            # upsert is idempotent and retried; a retried insert could store rows twice (the first try may
            # have landed before the connection broke), so an insert gets one try.
            write = functools.partial(
                self._call,
                f"{mode} {len(chunk)} rows into {name!r}",
                mode,
                collection_name=name,
                data=chunk,
                _retry=(mode == "upsert"),
                **extra,
            )
            if owners:
                with owner_lock(self.connection.display_uri, name):  # check and write: one step here
                    self._check_owners(name, chunk)
                    write()
                    self._check_owners(name, chunk, written=True)  # and a writer in another process
            else:
                write()
            written += len(chunk)
        return written

    # ----------------------------------------------------------------- partitions and tenants (was a mixin)

    # ----------------------------------------------------------------- named partitions (servers)

    def create_partition(self, name: str, partition: str) -> None:
        """Create the named partition ``partition`` in ``name`` (Milvus servers; refused on Milvus Lite)."""
        self._require(name)
        (part,) = self._partitions([partition])
        self._call(f"create partition {part!r} in {name!r}", "create_partition", name, part)

    def list_partitions(self, name: str) -> list[str]:
        """The partitions of ``name`` (Milvus servers; refused on Milvus Lite)."""
        self._require(name)
        self._partitions(["_default"])
        return sorted(self._call(f"list partitions of {name!r}", "list_partitions", name))

    def drop_partition(self, name: str, partition: str) -> None:
        """Drop the partition ``partition`` of ``name`` and its rows (Milvus servers; it must be released)."""
        self._require(name)
        (part,) = self._partitions([partition])
        self._call(f"release partition {part!r} of {name!r}", "release_partitions", name, [part])
        self._call(f"drop partition {part!r} of {name!r}", "drop_partition", name, part)

    def _partitions(self, names: Sequence[str] | None) -> tuple[str, ...]:
        caps = self.capabilities
        return check_partition_names(names, supported=caps.partitions, engine=caps.display_name)

    def _partition_kwargs(self, names: str | Sequence[str] | None, *, key: str) -> dict[str, Any]:
        """``{key: ...}`` for a pymilvus call (``partition_name`` one name, ``partition_names`` a list)."""
        parts = self._partitions([names] if isinstance(names, str) else names)
        if not parts:
            return {}
        return {key: parts[0]} if key == "partition_name" else {key: list(parts)}

    # ----------------------------------------------------------------- ids and tenants

    def _tenant(self, name: str, tenant: Any) -> str | int | None:
        return None if tenant is None else check_tenant(self.spec(name), tenant, collection=name)

    def _check_owners(self, name: str, rows: Sequence[Mapping[str, Any]], *, written: bool = False) -> None:
        """Refuse an upsert that would replace a row of another tenant (see ``owners_query``); ``written``:
        after the write, refuse when another writer's upsert of the same id replaced it."""
        query = owners_query(self.spec(name), self.capabilities, name, rows)
        if query is not None:
            stored = self._call(f"read the tenants of {len(rows)} ids in {name!r}", "query", **query)
            check = check_written_owners if written else check_owners
            check(self.spec(name), name, rows, stored)

    # --------------------------------------------------------------------- shared with the async manager

    # ----------------------------------------------------------------- tenant-scoped reads and deletes

    def delete(
        self,
        name: str,
        *,
        ids: Sequence[str | int] | None = None,
        filter: str | None = None,
        tenant: str | int | None = None,
        partition_name: str | None = None,
    ) -> int:
        """Delete by ids or by a filter expression (see ``filters.render``); ``tenant``: only among that
        tenant's rows; ``partition_name``: only in that partition (Milvus servers)."""
        self._require(name)
        if (ids is None) == (filter is None):
            raise ConfigError("delete needs ids or filter, exactly one")
        scoped = self._tenant(name, tenant)
        extra = self._partition_kwargs(partition_name, key="partition_name")
        expr = delete_filter(self.spec(name), self.capabilities, ids=ids, filter=filter, tenant=scoped)
        if expr is None:
            return 0
        if filter is None:
            res = self._call(f"delete from {name!r}", "delete", collection_name=name, filter=expr, **extra)
            return delete_count(res)
        try:
            with quiet_rpc_error_log("delete"):
                res = self._call(
                    f"delete from {name!r}", "delete", collection_name=name, filter=expr, **extra
                )
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException for an expression the engine rejects
            if not says_expression(exc):
                raise
            raise rejected_filter(name, str(filter), exc) from exc
        return delete_count(res)

    def get(
        self,
        name: str,
        ids: Sequence[str | int],
        *,
        output_fields: Sequence[str] | None = None,
        tenant: str | int | None = None,
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Fetch rows by id (text, metadata and declared fields by default; vectors only when asked).
        ``tenant``: only that tenant's rows; ``partition_names``: only those partitions (servers)."""
        spec = self.spec(name)
        scoped = self._tenant(name, tenant)
        extra = self._partition_kwargs(partition_names, key="partition_names")
        read = read_request(spec, self.capabilities, name, ids, output_fields=output_fields, tenant=scoped)
        if read is None:
            return []
        return read.rows(self._call(f"get from {name!r}", "query", **read.query, **extra))


# --------------------------------------------------------------------- the pure parts of get / upsert / delete
# Both managers drive them: CollectionManager sends the calls with its connection, AsyncCollectionManager
# awaits them on AsyncMilvusClient; what is sent and how an answer is checked is decided here, once.


@dataclass(frozen=True, kw_only=True)
class Read:
    """A prepared ``get`` (``read_request``): the query's keywords, and what its answer is checked by."""

    collection: str
    query: Mapping[str, Any]
    """``collection_name``, ``filter`` (the ids, tenant-scoped), ``output_fields``, ``limit``."""
    ids: tuple[str | int, ...]
    tenant: str | int | None
    partition_key: str | None

    def rows(self, res: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The query's answer as rows in the order of ``ids``; a row of another tenant raises."""
        rows = [dict(r) for r in res]
        if self.tenant is not None and self.partition_key is not None:
            check_tenant_rows(rows, self.partition_key, self.tenant, what="get", collection=self.collection)
        order = {v: i for i, v in enumerate(self.ids)}
        return sorted(rows, key=lambda r: order.get(r[ID_FIELD], len(order)))


def read_request(
    spec: CollectionSpec,
    caps: Capabilities,
    name: str,
    ids: Sequence[str | int],
    *,
    output_fields: Sequence[str] | None,
    tenant: str | int | None,
) -> Read | None:
    """The query of a ``get`` by ``ids`` (each checked; None: no ids, nothing to read). ``tenant``:
    checked by ``check_tenant``; its rows only, its field read back for the check of the answer."""
    checked = [check_id(x, i, spec) for i, x in enumerate(ids)]
    if not checked:
        return None
    out = list(output_fields) if output_fields is not None else default_output_fields(spec)
    if tenant is not None and spec.partition_key not in out:
        out.append(str(spec.partition_key))
    query = {
        "collection_name": name,
        "filter": scoped_expr(spec, caps, ids_filter(checked, caps.filter_dialect), tenant),
        "output_fields": out,
        "limit": len(checked),
    }
    return Read(
        collection=name, query=query, ids=tuple(checked), tenant=tenant, partition_key=spec.partition_key
    )


def delete_filter(
    spec: CollectionSpec,
    caps: Capabilities,
    *,
    ids: Sequence[str | int] | None,
    filter: str | None,
    tenant: str | int | None,
) -> str | None:
    """The expression a ``delete`` by ``ids`` (each checked) or by ``filter`` sends, scoped to ``tenant``
    (checked by ``check_tenant``); None: no ids, nothing to delete."""
    if ids is not None:
        checked = [check_id(x, i, spec) for i, x in enumerate(ids)]
        if not checked:
            return None
        expr = ids_filter(checked, caps.filter_dialect)
    else:
        expr = str(filter)
    return scoped_expr(spec, caps, expr, tenant)


def upsert_rows(
    spec: CollectionSpec,
    caps: Capabilities,
    name: str,
    *,
    ids: Sequence[str | int] | None,
    texts: Sequence[str],
    embeddings: M3Embeddings,
    metadata: Sequence[Mapping[str, Any] | None] | None,
    fields: Mapping[str, Sequence[Any]] | None,
    parent_ids: Sequence[str] | None,
    chunk_indexes: Sequence[int] | None,
    tenant: Any,
) -> list[dict[str, Any]]:
    """The validated rows of an upsert; ``tenant`` (checked here) fills every row's tenant field. Before
    each batch is written, ``owners_query`` / ``check_owners`` refuse ids stored for another tenant."""
    scoped = None if tenant is None else check_tenant(spec, tenant, collection=name)
    return _rows.prepare_rows(
        spec,
        caps,
        ids=ids,
        texts=texts,
        embeddings=embeddings,
        metadata=metadata,
        fields=tenant_fields(spec, len(texts), scoped, fields),
        parent_ids=parent_ids,
        chunk_indexes=chunk_indexes,
    )


_EXPRESSION_MARKERS = ("expr", "filter", "phyfilterbitsnode", "parse", "invalid parameter")


def says_expression(exc: Exception) -> bool:
    """Whether the engine's error is about the expression (measured on Lite 2.5.1 and its gRPC server:
    'Invalid expr: ...: invalid parameter' (code 1100), and for '1 == 1' 'Operator::GetOutput failed for
    [Operator:PhyFilterBitsNode ...] expr result must have a ColumnVector' (code 2000))."""
    text = str(exc).lower()
    return any(marker in text for marker in _EXPRESSION_MARKERS)


def rejected_filter(name: str, raw: str, exc: Exception) -> MilvusM3Error:
    """The error for a raw filter the engine refused (pymilvus's MilvusException), naming it and the fix."""
    msg = " ".join(str(getattr(exc, "message", "") or exc).split())
    return FilterError(
        f"the engine rejected the filter {raw[:200]!r} on collection {name!r}: {msg[:300]}. Check field "
        "names, value types and syntax (a filter must compare a field, e.g. 'lang == \"en\"'; '1 == 1' "
        "is refused by Milvus), or build it with milvus_m3.filters.F"
    )
