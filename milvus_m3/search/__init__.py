"""Searching a milvus-m3 collection: ``HybridSearcher`` and its parts.

searcher.py    HybridSearcher: the public methods (options as ``**options``), close / with
plan.py        plan(): a pure function, a call's options + the searcher's defaults -> SearchPlan
options.py     every option declared once (SearchOptions, RerankOptions, SearcherOptions and their
               TypedDicts), SearchPlan, the argument checks, the limits
execute.py     PlanRunner: how a plan is run, the strategy chosen once from the engine's flags
requests.py    the one place per-field requests (dense, sparse, BM25) are built
rerank.py      the BGE-M3 paper's fusion client-side: ``m3`` and ``m3-all`` (ColBERT)
candidates.py  its value types: M3Weights, CandidateSet
"""

from __future__ import annotations

from .options import MAX_TOPK, Mode, RankerName
from .searcher import HybridSearcher

__all__ = ["MAX_TOPK", "HybridSearcher", "Mode", "RankerName"]
