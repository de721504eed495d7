"""The tenant and partition parts of ``CollectionManager``: named partitions, tenant-scoped expressions,
and the owner check that keeps one tenant's upsert from replacing another tenant's row.

Private to ``collection.py`` (a mixin of ``CollectionManager``); the scoping rules are ``_tenancy.py``.
Imports neither pymilvus nor torch: every Milvus call goes through the manager's ``_call``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._tenancy import check_partition_names, check_tenant, check_tenant_rows, scope
from .errors import InputError
from .filters import F, literal, render
from .schema import ID_FIELD

if TYPE_CHECKING:
    from .capabilities import Capabilities
    from .schema import CollectionSpec

__all__ = ["PartitionOps", "delete_count"]


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
        dialect = self.capabilities.filter_dialect
        return f"{ID_FIELD} in [{', '.join(literal(v, dialect=dialect) for v in ids)}]"

    def _tenant(self, name: str, tenant: Any) -> str | int | None:
        return None if tenant is None else check_tenant(self.spec(name), tenant, collection=name)

    def _scoped_expr(self, name: str, expr: str, tenant: str | int | None) -> str:
        """``expr`` limited to ``tenant``'s rows (the tenant comparison first, every part in parentheses)."""
        if tenant is None:
            return expr
        pk = self.spec(name).partition_key
        out, _ = render(
            scope(expr or None, pk, tenant), templates=False, dialect=self.capabilities.filter_dialect
        )
        return out

    def _check_rows_tenant(
        self, name: str, rows: Sequence[Mapping[str, Any]], tenant: str | int | None
    ) -> None:
        pk = self.spec(name).partition_key
        if tenant is not None and pk is not None:
            check_tenant_rows(rows, pk, tenant, what="get", collection=name)

    def _tenant_fields(
        self, name: str, n: int, tenant: str | int | None, fields: Mapping[str, Sequence[Any]] | None
    ) -> Mapping[str, Sequence[Any]] | None:
        """``fields`` with every row's tenant set to ``tenant`` (a row naming another tenant is refused)."""
        if tenant is None:
            return fields
        pk = self.spec(name).partition_key
        assert pk is not None  # check_tenant refused a collection without one
        out = dict(fields or {})
        given = out.get(pk)
        if given is not None:
            for i, value in enumerate(given):
                if value is not None and value != tenant:
                    raise InputError(
                        f"row {i}: field {pk!r} is {value!r} but the upsert is for tenant {tenant!r}; "
                        f"leave {pk!r} out (tenant= fills it) or write each tenant's rows with its own call",
                        row=i,
                        field=pk,
                    )
        out[pk] = [tenant] * n
        return out

    def _check_owners(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Refuse an upsert that would replace a row of another tenant (same id, other tenant value).

        Milvus upserts by primary key across the whole collection, so without this check tenant B
        writing id "1" would silently take over tenant A's row "1"."""
        pk = self.spec(name).partition_key
        if pk is None or not rows:
            return
        want = {row[ID_FIELD]: row.get(pk) for row in rows}
        expr, _ = render(
            F.in_(ID_FIELD, list(want)), templates=False, dialect=self.capabilities.filter_dialect
        )
        stored = self._call(
            f"read the tenants of {len(want)} ids in {name!r}",
            "query",
            collection_name=name,
            filter=expr,
            output_fields=[pk],
            limit=len(want),
        )
        index = {row[ID_FIELD]: i for i, row in enumerate(rows)}
        for row in stored:
            doc = row[ID_FIELD]
            if doc in want and row.get(pk) != want[doc]:
                raise InputError(
                    f"row {index[doc]}: id {doc!r} is already stored for another tenant in {name!r}; "
                    "an upsert would move that tenant's row. Use ids unique across tenants (e.g. prefix them "
                    "with the tenant) or delete the other row first",
                    row=index[doc],
                    field=ID_FIELD,
                )


def delete_count(res: Any) -> int:
    """The number of rows a pymilvus ``delete`` answer says were deleted."""
    if isinstance(res, Mapping):
        return int(res.get("delete_count", 0))
    if isinstance(res, list):  # pymilvus 3 returns the deleted keys
        return len(res)
    return int(getattr(res, "delete_count", 0) or 0)
