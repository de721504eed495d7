"""Multi-tenancy: the partition-key (tenant) field of a spec, per-call tenant scoping, and its checks.

A collection built with ``CollectionSpec(partition_key="tenant")`` stores each row's tenant in that
field. A call given ``tenant=`` is scoped with ``F.eq(partition_key, tenant)`` rendered by
``filters.render`` (escaped, or a template parameter), put *first* and joined with the caller's filter
by ``and``, every part in parentheses. A raw caller expression whose parentheses do not balance outside
its string literals (``'x != "" ) or ( x != ""'``) could close the parenthesis around it and turn the
``and`` into an ``or``: it is refused before anything is sent. Results are checked once more: a hit or
row of another tenant is an error, never a result.

On a Milvus server the field is the partition key (the engine prunes partitions by the same filter);
on Milvus Lite it is a plain field (``Capabilities.partition_key``), scoped by the same filter.

Private; imports neither pymilvus nor torch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FilterError, InputError, SearchError
from ..filters import Dialect, F, Filter, FilterLike, literal, render
from .fields import ID_FIELD, RESERVED_FIELDS, ScalarField

if TYPE_CHECKING:
    from ..engine.capabilities import Capabilities
    from .schema import CollectionSpec

__all__ = [
    "MAX_PARTITIONS",
    "check_balanced",
    "check_partition_names",
    "check_tenant",
    "check_tenant_rows",
    "scope",
    "with_partition_key",
]

MAX_PARTITIONS = 4096
"""Milvus's cap on partitions per collection (``rootCoord.maxPartitionNum``)."""

TENANT_MAX_LENGTH = 512


def with_partition_key(
    scalar_fields: Iterable[ScalarField], partition_key: str | None, num_partitions: int | None
) -> tuple[ScalarField, ...]:
    """``scalar_fields`` with the partition-key field declared (a required varchar when not given)."""

    fields = tuple(scalar_fields)
    if partition_key is None:
        if num_partitions is not None:
            raise ConfigError(
                "num_partitions needs partition_key (the field whose value picks the partition)"
            )
        return fields
    if (
        not isinstance(partition_key, str)
        or not partition_key.isidentifier()
        or partition_key in RESERVED_FIELDS
    ):
        raise ConfigError(
            f"partition_key {partition_key!r} must be a field name (an identifier) and not one of "
            f"{sorted(RESERVED_FIELDS)}"
        )
    if num_partitions is not None and (
        isinstance(num_partitions, bool)
        or not isinstance(num_partitions, int)
        or not 1 <= num_partitions <= MAX_PARTITIONS
    ):
        raise ConfigError(f"num_partitions must be an int in [1, {MAX_PARTITIONS}], got {num_partitions!r}")
    declared = [f for f in fields if f.name == partition_key]
    if not declared:
        return (*fields, ScalarField(name=partition_key, dtype="varchar", max_length=TENANT_MAX_LENGTH))
    sf = declared[0]
    if sf.dtype not in ("varchar", "int64") or sf.nullable or sf.default is not None:
        raise ConfigError(
            f"partition_key field {partition_key!r} must be a varchar or int64 ScalarField without a default "
            "and not nullable: every row must name its tenant"
        )
    return fields


def tenant_value_problem(value: Any) -> str | None:
    """Why ``value`` could be stored as a tenant but never found again by a tenant-scoped search, get or
    delete (measured on Milvus Lite 2.5.1 and its gRPC server): a NUL byte or a lone carriage return in a
    string (the engine's filter never matches it), the int64 minimum (its literal does not parse back)."""
    if isinstance(value, str):
        if "\x00" in value:
            return "holds a NUL byte, which no Milvus filter matches"
        if "\r" in value.replace("\r\n", ""):
            return "holds a carriage return without a line feed, which no Milvus filter matches"
    elif isinstance(value, int) and not isinstance(value, bool) and value == -(2**63):
        return "is -2**63 (the int64 minimum), which a Milvus filter cannot state"
    return None


def tenant_from_text(spec: CollectionSpec, text: str) -> str | int:
    """A tenant given as text (the command line's ``--tenant``) as its field's type: an int for an int64
    tenant field ("5" -> 5), else the text itself."""
    pk = spec.partition_key
    dtype = next((f.dtype for f in spec.scalar_fields if f.name == pk), "varchar")
    if dtype != "int64":
        return text
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ConfigError(
            f"--tenant {text!r}: the tenant field {pk!r} is int64, so give an integer such as --tenant 5"
        ) from None


def check_tenant(spec: CollectionSpec, tenant: Any, *, collection: str) -> str | int:
    """``tenant`` as the value of the collection's tenant field; ConfigError / InputError say the fix."""
    pk = spec.partition_key
    if pk is None:
        raise ConfigError(
            f"tenant= given, but collection {collection!r} has no tenant field; create it with "
            "CollectionSpec(partition_key='tenant') (milvus-m3 create --partition-key tenant)"
        )
    dtype = next(f.dtype for f in spec.scalar_fields if f.name == pk)
    if dtype == "int64":
        if isinstance(tenant, bool) or not isinstance(tenant, int):
            raise InputError(f"tenant must be an int (field {pk!r} is int64), got {tenant!r}", field=pk)
    elif not isinstance(tenant, str) or not tenant:
        raise InputError(f"tenant must be a non-empty string (field {pk!r}), got {tenant!r}", field=pk)
    problem = tenant_value_problem(tenant)
    if problem is not None:
        raise InputError(f"tenant {tenant!r} {problem}; use another tenant value", field=pk)
    checked: str | int = tenant
    return checked


def check_balanced(expr: str) -> None:
    """Refuse a raw expression whose brackets or quotes do not balance outside its string literals."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    ok = True
    for ch in expr:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            stack.append(")" if ch == "(" else "]")
        elif ch in ")]" and (not stack or stack.pop() != ch):
            ok = False
            break
    if not ok or stack or quote is not None:
        raise FilterError(
            f"raw filter {expr[:80]!r} has unbalanced brackets or quotes outside its string literals; "
            "combined with the tenant filter it could escape its parentheses and match other tenants' "
            "rows. Balance it, or build it with milvus_m3.filters.F"
        )


def _items(filters: FilterLike) -> list[str | Filter]:
    if filters is None:
        return []
    if isinstance(filters, (str, Filter)):
        return [filters]
    return list(filters)


def scope(filters: FilterLike, pk: str | None, tenant: str | int | None) -> FilterLike:
    """The caller's filters, with the tenant comparison first when ``tenant`` is given (each raw part
    checked with ``check_balanced`` then)."""
    if tenant is None or pk is None:
        return filters
    items = _items(filters)
    for item in items:
        if isinstance(item, str):
            check_balanced(item)
    return [F.eq(pk, tenant), *items]


def check_partition_names(names: Any, *, supported: bool, engine: str) -> tuple[str, ...]:
    """Partition names as a tuple of non-empty strings, refused where the engine has no partitions."""
    if names is None:
        return ()
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ConfigError(f"partition_names must be a non-empty list of partition names, got {names!r}")
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"partition_names must be non-empty strings, got {list(names)!r}")
    if not supported:
        raise ConfigError(
            f"{engine} has no partitions: it ignores partition names, so a search would read every row and a "
            "delete would delete from all of them. Use a tenant field (CollectionSpec(partition_key=...), "
            "then tenant=...) or a Milvus server"
        )
    return tuple(names)


def check_tenant_rows(
    rows: Sequence[Mapping[str, Any]], pk: str, tenant: str | int, *, what: str, collection: str
) -> None:
    """A row of another tenant in a tenant-scoped result is an isolation failure: raise, never return it."""
    for row in rows:
        if row.get(pk) != tenant:
            raise SearchError(
                f"{what} on {collection!r} scoped to one tenant returned a row of another tenant "
                f"(id {row.get('id')!r}); nothing was returned. Report this with the filter used"
            )


# ----------------------------------------------------------------- expressions and owner checks


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


def _conflict(
    spec: CollectionSpec, rows: Sequence[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]
) -> tuple[int, Any] | None:
    """(row, id) of the first id of ``rows`` that ``stored`` holds for another tenant, or None."""
    pk = spec.partition_key
    if pk is None:
        return None
    want = {row[ID_FIELD]: (i, row.get(pk)) for i, row in enumerate(rows)}
    for row in stored:
        doc = row[ID_FIELD]
        if doc in want and row.get(pk) != want[doc][1]:
            return want[doc][0], doc
    return None


def check_owners(
    spec: CollectionSpec, name: str, rows: Sequence[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]
) -> None:
    """InputError naming the row when an id of ``rows`` is ``stored`` for another tenant."""
    found = _conflict(spec, rows, stored)
    if found is not None:
        row, doc = found
        raise InputError(
            f"row {row}: id {doc!r} is already stored for another tenant in {name!r}; "
            "an upsert would move that tenant's row. Use ids unique across tenants (e.g. prefix them "
            "with the tenant) or delete the other row first",
            row=row,
            field=ID_FIELD,
        )


def check_written_owners(
    spec: CollectionSpec, name: str, rows: Sequence[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]
) -> None:
    """After an upsert: InputError naming the row when an id of ``rows`` is now stored for another
    tenant, i.e. another writer upserted the same id for its tenant between this batch's owner check and
    its write (on a server, from another process): of two such writers at most one succeeds."""
    found = _conflict(spec, rows, stored)
    if found is not None:
        row, doc = found
        raise InputError(
            f"row {row}: id {doc!r} was upserted for another tenant in {name!r} at the same time as this "
            "batch, and that write replaced this one; nothing of the other tenant was lost. Use ids "
            "unique across tenants (e.g. prefix them with the tenant)",
            row=row,
            field=ID_FIELD,
        )


_OWNER_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_OWNER_LOCKS_GUARD = threading.Lock()


def owner_lock(uri: str, name: str) -> threading.Lock:
    """The lock that makes the owner check and the write of a tenant upsert one step for every writer in
    this process (threads, managers) to collection ``name`` at ``uri``."""
    with _OWNER_LOCKS_GUARD:
        return _OWNER_LOCKS.setdefault((uri, name), threading.Lock())


def delete_count(res: Any) -> int:
    """The number of rows a pymilvus ``delete`` answer says were deleted."""
    if isinstance(res, Mapping):
        return int(res.get("delete_count", 0))
    if isinstance(res, list):  # pymilvus 3 returns the deleted keys
        return len(res)
    return int(getattr(res, "delete_count", 0) or 0)
