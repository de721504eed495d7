"""Adapters for the frameworks users already use; each is its own module and optional extra.

integrations.langchain     ``MilvusM3Retriever``, a LangChain ``BaseRetriever`` (``pip install milvus-m3[langchain]``)
integrations.llama_index   ``MilvusM3Retriever``, a LlamaIndex ``BaseRetriever`` (``pip install milvus-m3[llama-index]``)

Nothing here imports a framework: ``import milvus_m3`` and ``import milvus_m3.integrations`` load
neither langchain_core nor llama_index; importing one adapter module loads its framework only.
"""

from __future__ import annotations

__all__: list[str] = []
