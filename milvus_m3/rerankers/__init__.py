"""Second-stage rerankers: the cross-encoder (``CrossEncoderReranker``)."""

from __future__ import annotations

from .cross_encoder import CrossEncoderReranker

__all__ = ["CrossEncoderReranker"]
