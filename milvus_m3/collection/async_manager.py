"""AsyncCollectionManager: the async parts serving code needs (search calls, get, upsert, delete, count)
on pymilvus's ``AsyncMilvusClient``, next to a ``CollectionManager`` for the rest.

Only the awaiting differs: what get / upsert / delete send and how their answers are checked (ids,
tenant scoping, row preparation, owner-check queries, filters) are the pure parts in ``manager.py``
(``read_request``, ``upsert_rows``, ``delete_filter``) and ``tenancy.py``, which the sync manager drives too.

Lifecycle (create, describe, check, drop) happens once at start-up and stays on the sync manager
(``.sync``); the calls a request handler makes go through ``AsyncMilvusClient`` with the same retry
policy, deadlines, error classification and secret scrubbing as the sync client (``_retry``). Rows are
validated by the same code as ``CollectionManager.upsert`` before anything is sent.

Measured with pymilvus 3.0.2 and milvus-lite 2.5.1: ``AsyncMilvusClient`` works against a Lite file
(embedded mode: pymilvus starts, or reuses, the same local engine the sync client uses) and against a
gRPC server (tests run it on the loopback server tier with 50 concurrent searches). On an engine whose
reads are unsafe during writes (``Capabilities.reads_during_writes_unsafe``: Milvus Lite), each call
takes the file's read/write lock, shared with the sync clients of this process, from a worker thread
(the event loop never waits on it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine import lite
from ..engine.capabilities import Capabilities
from ..engine.connection import ConnectionOptions, quiet_rpc_error_log
from ..engine.retry import Secrets, acall_with_retry
from ..engine.uri import is_local_file_uri
from ..errors import ConfigError, MilvusM3Error, MissingDependencyError
from ..types import M3Embeddings
from .fields import ID_FIELD
from .manager import (
    DEFAULT_WRITE_BATCH,
    CollectionManager,
    delete_filter,
    read_request,
    rejected_filter,
    says_expression,
    upsert_rows,
)
from .schema import CollectionSpec
from .tenancy import check_owners, check_tenant, check_written_owners, delete_count, owners_query

__all__ = ["AsyncCollectionManager"]

logger = logging.getLogger("milvus_m3.collection")


class AsyncCollectionManager:
    """Async reads and writes of milvus-m3 collections on ``AsyncMilvusClient``.

    uri, options, option_kwargs: as for ``CollectionManager`` (a sync manager is opened with them for
    the lifecycle calls and the collection checks); or pass an open ``manager``. The async client is
    created inside the running event loop on the first call. Use ``async with`` or ``await close()``.
    """

    def __init__(
        self,
        uri: str = "./milvus_m3.db",
        *,
        options: ConnectionOptions | None = None,
        manager: CollectionManager | None = None,
        **option_kwargs: Any,
    ) -> None:
        if manager is not None and (options is not None or option_kwargs):
            raise ConfigError(
                "give manager= or connection options, not both: a manager carries its own options"
            )
        self._owns_sync = manager is None
        self.sync = (
            manager if manager is not None else CollectionManager(uri, options=options, **option_kwargs)
        )
        """The sync manager: create_collection, describe, check_collection, drop, ..."""
        conn = self.sync.connection
        self._uri = conn.uri
        self._opts = conn.options
        self._secrets = Secrets(
            self._opts.token,
            self._opts.password,
            f"{self._opts.user}:{self._opts.password}" if self._opts.user and self._opts.password else None,
        )
        self._client: Any = None
        local = is_local_file_uri(self._uri) and self.capabilities.reads_during_writes_unsafe
        self._lock = lite.acquire(self._uri) if local else None

    def __repr__(self) -> str:
        return f"AsyncCollectionManager(uri={self.uri!r})"

    async def __aenter__(self) -> AsyncCollectionManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def uri(self) -> str:
        return self.sync.uri

    @property
    def capabilities(self) -> Capabilities:
        return self.sync.capabilities

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:
                logger.debug("closing the async client failed", exc_info=True)
        if self._lock is not None:
            self._lock = None
            lite.release(self._uri)
        if self._owns_sync:
            self.sync.close()

    # ----------------------------------------------------------------- calls

    def _connect(self) -> Any:
        try:
            from pymilvus import AsyncMilvusClient
        except ImportError as exc:  # pymilvus < 2.5.3
            raise MissingDependencyError(
                "AsyncMilvusClient needs pymilvus >= 2.5.3; pip install -U pymilvus"
            ) from exc
        kwargs = self._opts.client_kwargs()
        kwargs["timeout"] = self._opts.connect_timeout
        return AsyncMilvusClient(self._uri, **kwargs)

    async def call(self, what: str, method: str, *args: Any, _retry: bool = True, **kwargs: Any) -> Any:
        """``await client.<method>(...)`` with retries, a deadline and secret-free errors."""
        if self._client is None:
            self._client = self._connect()
        fn = getattr(self._client, method)
        policy = self._opts.retry
        if not _retry:
            policy = type(policy)(attempts=1, total_seconds=policy.total_seconds)
        timeout = self._opts.timeout if "timeout" not in kwargs else None
        run = acall_with_retry(
            fn,
            args,
            kwargs,
            what=what,
            where=self.uri,
            policy=policy,
            timeout=timeout,
            secrets=self._secrets,
        )
        if self._lock is None:
            return await run
        guard = lite.guard(self._lock, method)
        entered = asyncio.ensure_future(asyncio.to_thread(guard.__enter__))
        try:
            await asyncio.shield(entered)
        except asyncio.CancelledError:  # the worker still takes the lock: give it back once it has
            entered.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else guard.__exit__(None, None, None)
            )
            run.close()
            raise
        try:
            return await run
        finally:
            guard.__exit__(None, None, None)

    # ----------------------------------------------------------------- reads and writes

    def spec(self, name: str) -> CollectionSpec:
        """The collection's spec (read by the sync manager; cached after the first read)."""
        return self.sync.spec(name)

    async def count(self, name: str) -> int:
        res = await self.call(
            f"count {name!r}", "query", collection_name=name, filter="", output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"])

    async def get(
        self,
        name: str,
        ids: Sequence[str | int],
        *,
        output_fields: Sequence[str] | None = None,
        tenant: str | int | None = None,
    ) -> list[dict[str, Any]]:
        """``CollectionManager.get`` on the async client (tenant-scoped when ``tenant`` is given)."""
        spec = self.spec(name)
        scoped = None if tenant is None else check_tenant(spec, tenant, collection=name)
        read = read_request(spec, self.capabilities, name, ids, output_fields=output_fields, tenant=scoped)
        if read is None:
            return []
        return read.rows(await self.call(f"get from {name!r}", "query", **read.query))

    async def upsert(
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
    ) -> int:
        """``CollectionManager.upsert`` on the async client: every row validated first; on a collection
        with a tenant field, an id stored for another tenant is refused, never replaced."""
        spec = self.spec(name)
        if spec.auto_id:
            raise ConfigError(f"collection {name!r} uses auto_id: insert with the sync manager")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
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
        written = 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            query = owners_query(spec, self.capabilities, name, chunk)
            if query is not None:
                stored = await self.call(
                    f"read the tenants of {len(chunk)} ids in {name!r}", "query", **query
                )
                check_owners(spec, name, chunk, stored)
            await self.call(
                f"upsert {len(chunk)} rows into {name!r}", "upsert", collection_name=name, data=chunk
            )
            if query is not None:  # another writer of the same id for another tenant: at most one wins
                stored = await self.call(
                    f"read the tenants of {len(chunk)} ids in {name!r}", "query", **query
                )
                check_written_owners(spec, name, chunk, stored)
            written += len(chunk)
        return written

    async def delete(
        self,
        name: str,
        *,
        ids: Sequence[str | int] | None = None,
        filter: str | None = None,
        tenant: str | int | None = None,
    ) -> int:
        """``CollectionManager.delete`` on the async client."""
        if (ids is None) == (filter is None):
            raise ConfigError("delete needs ids or filter, exactly one")
        spec = self.spec(name)
        scoped = None if tenant is None else check_tenant(spec, tenant, collection=name)
        expr = delete_filter(spec, self.capabilities, ids=ids, filter=filter, tenant=scoped)
        if expr is None:
            return 0
        if filter is None:
            return delete_count(
                await self.call(f"delete from {name!r}", "delete", collection_name=name, filter=expr)
            )
        try:
            with quiet_rpc_error_log("query"):
                # pymilvus's AsyncMilvusClient answers a delete whose expression the engine rejects with
                # delete_count 0 and no error (measured, pymilvus 3.0.2, Lite): the expression is tried
                # with a one-row query first, which does raise, so a bad filter is never a silent 0.
                await self.call(
                    f"check the filter of a delete from {name!r}",
                    "query",
                    collection_name=name,
                    filter=expr,
                    output_fields=[ID_FIELD],
                    limit=1,
                )
            res = await self.call(f"delete from {name!r}", "delete", collection_name=name, filter=expr)
        except MilvusM3Error:
            raise
        except Exception as exc:  # pymilvus raises MilvusException for an expression the engine rejects
            if not says_expression(exc):
                raise
            raise rejected_filter(name, str(filter), exc) from exc
        return delete_count(res)
