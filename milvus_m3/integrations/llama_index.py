"""A LlamaIndex retriever over milvus-m3: ``MilvusM3Retriever(searcher=..., limit=...)``.

``retrieve`` / ``aretrieve`` give ``NodeWithScore``s in the searcher's order: ``score`` is the fused
score (exactly ``Hit.score``), the node a ``TextNode`` whose ``id_`` is the hit's id (as a string),
``text`` the hit's text and ``metadata`` ``{"id", "score", "metadata", "fields"}`` (kept out of the
text the LLM and embedder see). ``searcher`` is a ``HybridSearcher`` or an ``AsyncHybridSearcher``;
``aretrieve`` awaits the async one and runs a sync one in a worker thread. Other search options go in
``search_kwargs``.

Needs ``pip install 'milvus-m3[llama-index]'`` (llama-index-core); ``import milvus_m3`` does not load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._common import asearch, hit_metadata, missing_framework, search

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise missing_framework("llama-index-core", "llama-index", exc) from exc

from ..filters import FilterLike
from ..types import Hit

__all__ = ["MilvusM3Retriever", "to_node"]


def to_node(hit: Hit) -> NodeWithScore:
    """A LlamaIndex NodeWithScore for one hit (see the module docstring)."""
    metadata = hit_metadata(hit)
    node = TextNode(
        id_=str(hit.id),
        text=hit.text or "",
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=hit.score)


class MilvusM3Retriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` over a milvus-m3 ``HybridSearcher`` / ``AsyncHybridSearcher``."""

    def __init__(
        self,
        searcher: Any,
        *,
        limit: int = 10,
        mode: str | None = None,
        filter: FilterLike = None,
        tenant: str | int | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.searcher = searcher
        self.limit = limit
        self.mode = mode
        self.filter = filter
        self.tenant = tenant
        self.search_kwargs = dict(search_kwargs or {})

    def _options(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "mode": self.mode,
            "filter": self.filter,
            "tenant": self.tenant,
            "extra": self.search_kwargs,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(h) for h in search(self.searcher, query_bundle.query_str, **self._options())]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await asearch(self.searcher, query_bundle.query_str, **self._options())
        return [to_node(h) for h in hits]
