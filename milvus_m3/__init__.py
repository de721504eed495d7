"""milvus-m3: hybrid dense + learned-sparse retrieval for Milvus with BGE-M3."""

from __future__ import annotations

__version__ = "0.1.0"
