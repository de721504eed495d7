"""The BM25 text analyzers by name (re-exported by schema.py, which builds the BM25 leg from them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["BM25_ANALYZERS", "DEFAULT_BM25_ANALYZER", "Analyzer"]

Analyzer = Literal["standard", "english", "chinese", "jieba", "whitespace", "icu", "lindera"]
BM25_ANALYZERS: Mapping[str, Mapping[str, Any]] = {
    "standard": {"type": "standard"},
    "english": {"type": "english"},
    "chinese": {"type": "chinese"},
    "jieba": {"tokenizer": "jieba"},
    "whitespace": {"tokenizer": "whitespace"},
    "icu": {"tokenizer": "icu"},
    "lindera": {"tokenizer": {"type": "lindera", "dict_kind": "ipadic"}},
}
"""The BM25 text analyzers by name: Milvus's built-in analyzer or tokenizer each name stands for.

Which to pick (measured on Milvus Lite 2.5.1, tests/integration/test_bm25.py): English ``english``
(stemming, stop words); other space-separated languages (Arabic, ...) ``standard``; Chinese ``chinese``;
Thai ``icu`` on a server, ``jieba`` on Milvus Lite (which cannot run ``icu``: jieba splits Thai into
single characters, so a query word still finds its passage); Japanese ``lindera`` (servers only).
``Capabilities.bm25_analyzers`` lists what an engine runs."""
DEFAULT_BM25_ANALYZER: Analyzer = "english"
