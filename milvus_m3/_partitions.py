"""The tenant and partition parts of ``CollectionManager``: named partitions, tenant-scoped get and delete,
tenant-scoped expressions,
and the owner check that keeps one tenant's upsert from replacing another tenant's row.

Private to ``collection.py`` (a mixin of ``CollectionManager``); the scoping rules are ``_tenancy.py``.
Imports neither pymilvus nor torch: every Milvus call goes through the manager's ``_call``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._rows import check_id
from ._tenancy import check_partition_names, check_tenant, check_tenant_rows, scope
from .errors import ConfigError, InputError
from .filters import Dialect, literal, render
from .schema import ID_FIELD, default_output_fields

if TYPE_CHECKING:
    from .capabilities import Capabilities
    from .schema import CollectionSpec

__all__ = [
    "PartitionOps",
    "check_owners",
    "delete_count",
    "ids_filter",
    "owners_query",
    "scoped_expr",
    "tenant_fields",
]


class PartitionOps:
    """Partitions and tenant scoping for ``CollectionManager`` (which provides ``_call``, ``spec``,
    ``capabilities`` and ``_require``)."""

    if TYPE_CHECKING:

        @property
        def capabilities(self) -> Capabilities: ...

        def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any: ...

        def spec(self, name: str) -> CollectionSpec: ...

        def _require(self, name: str) -> None: ...

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

    def _ids_filter(self, ids: Sequence[str | int]) -> str:
        """``id in [...]`` with every id written as an escaped literal for this engine."""
        return ids_filter(ids, self.capabilities.filter_dialect)

    def _tenant(self, name: str, tenant: Any) -> str | int | None:
        return None if tenant is None else check_tenant(self.spec(name), tenant, collection=name)

    def _scoped_expr(self, name: str, expr: str, tenant: str | int | None) -> str:
        return scoped_expr(self.spec(name), self.capabilities, expr, tenant)

    def _check_rows_tenant(
        self, name: str, rows: Sequence[Mapping[str, Any]], tenant: str | int | None
    ) -> None:
        pk = self.spec(name).partition_key
        if tenant is not None and pk is not None:
            check_tenant_rows(rows, pk, tenant, what="get", collection=name)

    def _tenant_fields(
        self, name: str, n: int, tenant: str | int | None, fields: Mapping[str, Sequence[Any]] | None
    ) -> Mapping[str, Sequence[Any]] | None:
        return tenant_fields(self.spec(name), n, tenant, fields)

    def _check_owners(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Refuse an upsert that would replace a row of another tenant (see ``owners_query``)."""
        query = owners_query(self.spec(name), self.capabilities, name, rows)
        if query is not None:
            stored = self._call(f"read the tenants of {len(rows)} ids in {name!r}", "query", **query)
            check_owners(self.spec(name), name, rows, stored)

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
        if ids is not None:
            spec = self.spec(name)
            checked = [check_id(x, i, spec) for i, x in enumerate(ids)]
            if not checked:
                return 0
            expr = self._ids_filter(checked)
        else:
            expr = str(filter)
        expr = self._scoped_expr(name, expr, scoped)
        res = self._call(f"delete from {name!r}", "delete", collection_name=name, filter=expr, **extra)
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
        checked = [check_id(x, i, spec) for i, x in enumerate(ids)]
        if not checked:
            return []
        out = list(output_fields) if output_fields is not None else default_output_fields(spec)
        if scoped is not None and spec.partition_key not in out:
            out.append(str(spec.partition_key))
        res = self._call(
            f"get from {name!r}",
            "query",
            collection_name=name,
            filter=self._scoped_expr(name, self._ids_filter(checked), scoped),
            output_fields=out,
            limit=len(checked),
            **extra,
        )
        rows = [dict(r) for r in res]
        self._check_rows_tenant(name, rows, scoped)
        order = {v: i for i, v in enumerate(checked)}
        return sorted(rows, key=lambda r: order.get(r[ID_FIELD], len(order)))


def ids_filter(ids: Sequence[str | int], dialect: Dialect) -> str:
    """``id in [...]`` with every id written as an escaped literal for ``dialect``."""
    return f"{ID_FIELD} in [{', '.join(literal(v, dialect=dialect) for v in ids)}]"


def scoped_expr(spec: CollectionSpec, caps: Capabilities, expr: str, tenant: str | int | None) -> str:
    """``expr`` limited to ``tenant``'s rows (the tenant comparison first, every part in parentheses)."""
    if tenant is None:
        return expr
    out, _ = render(
        scope(expr or None, spec.partition_key, tenant), templates=False, dialect=caps.filter_dialect
    )
    return out


def tenant_fields(
    spec: CollectionSpec, n: int, tenant: str | int | None, fields: Mapping[str, Sequence[Any]] | None
) -> Mapping[str, Sequence[Any]] | None:
    """``fields`` with every row's tenant set to ``tenant`` (a row naming another tenant is refused)."""
    pk = spec.partition_key
    if tenant is None or pk is None:
        return fields
    out = dict(fields or {})
    for i, value in enumerate(out.get(pk) or ()):
        if value is not None and value != tenant:
            raise InputError(
                f"row {i}: field {pk!r} is {value!r} but the upsert is for tenant {tenant!r}; "
                f"leave {pk!r} out (tenant= fills it) or write each tenant's rows with its own call",
                row=i,
                field=pk,
            )
    out[pk] = [tenant] * n
    return out


def owners_query(
    spec: CollectionSpec, caps: Capabilities, name: str, rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The query reading who owns the ids of an upsert batch (None: no tenant field, or no rows).

    Milvus upserts by primary key across the whole collection, so without this check tenant B
    writing id "1" would silently take over tenant A's row "1"."""
    pk = spec.partition_key
    if pk is None or not rows:
        return None
    ids = list(dict.fromkeys(row[ID_FIELD] for row in rows))
    return {
        "collection_name": name,
        "filter": ids_filter(ids, caps.filter_dialect),
        "output_fields": [pk],
        "limit": len(ids),
    }


def check_owners(
    spec: CollectionSpec, name: str, rows: Sequence[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]
) -> None:
    """InputError naming the row when an id of ``rows`` is ``stored`` for another tenant."""
    pk = spec.partition_key
    if pk is None:
        return
    want = {row[ID_FIELD]: (i, row.get(pk)) for i, row in enumerate(rows)}
    for row in stored:
        doc = row[ID_FIELD]
        if doc in want and row.get(pk) != want[doc][1]:
            raise InputError(
                f"row {want[doc][0]}: id {doc!r} is already stored for another tenant in {name!r}; "
                "an upsert would move that tenant's row. Use ids unique across tenants (e.g. prefix them "
                "with the tenant) or delete the other row first",
                row=want[doc][0],
                field=ID_FIELD,
            )


def delete_count(res: Any) -> int:
    """The number of rows a pymilvus ``delete`` answer says were deleted."""
    if isinstance(res, Mapping):
        return int(res.get("delete_count", 0))
    if isinstance(res, list):  # pymilvus 3 returns the deleted keys
        return len(res)
    return int(getattr(res, "delete_count", 0) or 0)
