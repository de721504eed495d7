"""A LangChain retriever over milvus-m3: ``MilvusM3Retriever(searcher=..., limit=...)``.

``invoke`` / ``ainvoke`` give ``Document``s in the searcher's order: ``page_content`` is the hit's
text, ``id`` the hit's id (as a string), and ``metadata`` holds ``id`` (as stored), ``score`` (the
fused score, exactly ``Hit.score``), ``metadata`` (the stored metadata) and ``fields`` (declared
fields). ``searcher`` is a ``HybridSearcher`` or an ``AsyncHybridSearcher``; ``ainvoke`` awaits the
async one and runs a sync one in a worker thread. ``mode``, ``limit``, ``filter`` and ``tenant`` are
fields; any other search option (``ranker``, ``weights``, ``group_by``, ``candidate_limit``,
``output_fields``, ...) goes in ``search_kwargs``.

Needs ``pip install 'milvus-m3[langchain]'`` (langchain-core); ``import milvus_m3`` does not load it.
"""

from __future__ import annotations

from typing import Any

from ._common import asearch, hit_metadata, missing_framework, search

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise missing_framework("langchain-core", "langchain", exc) from exc

from ..types import Hit

__all__ = ["MilvusM3Retriever", "to_document"]


def to_document(hit: Hit) -> Document:
    """A LangChain Document for one hit (see the module docstring for its metadata)."""
    return Document(page_content=hit.text or "", metadata=hit_metadata(hit), id=str(hit.id))


class MilvusM3Retriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over a milvus-m3 ``HybridSearcher`` / ``AsyncHybridSearcher``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Any
    """A HybridSearcher or an AsyncHybridSearcher."""
    limit: int = 10
    mode: str | None = None
    """hybrid, dense, sparse, m3 or m3-all (None: the searcher's default)."""
    filter: Any = None
    """A raw expression, a milvus_m3.filters.Filter (F.eq(...)), or a list of them."""
    tenant: str | int | None = None
    search_kwargs: dict[str, Any] = {}
    """Other HybridSearcher.search options (ranker, weights, group_by, candidate_limit, output_fields, ...)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = search(
            self.searcher,
            query,
            limit=self.limit,
            mode=self.mode,
            filter=self.filter,
            tenant=self.tenant,
            extra=self.search_kwargs,
        )
        return [to_document(h) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = await asearch(
            self.searcher,
            query,
            limit=self.limit,
            mode=self.mode,
            filter=self.filter,
            tenant=self.tenant,
            extra=self.search_kwargs,
        )
        return [to_document(h) for h in hits]
