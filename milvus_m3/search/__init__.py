"""Searching a milvus-m3 collection: ``HybridSearcher`` and its parts.

    searcher.py  HybridSearcher: the public methods, argument checks, the call plan
    requests.py  the one place per-field requests (dense, sparse, BM25) are built
    rerank.py    the BGE-M3 paper's fusion client-side: ``m3`` and ``m3-all`` (ColBERT)
"""

from __future__ import annotations

from .searcher import MAX_TOPK, HybridSearcher, Mode, RankerName

__all__ = ["MAX_TOPK", "HybridSearcher", "Mode", "RankerName"]
