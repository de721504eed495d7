"""The embedder: ``M3Embedder`` over one backend-neutral encode loop and one file per backend.

``model`` (the public class), ``backend`` (the backend protocol and the table of backends),
``checkpoint`` (finding and checking a checkpoint), the backends and the loop they share.
"""

from __future__ import annotations

from .model import BACKENDS, DEFAULT_MODEL, OVERFLOW_MODES, PRECISIONS, M3Embedder

__all__ = ["BACKENDS", "DEFAULT_MODEL", "OVERFLOW_MODES", "PRECISIONS", "M3Embedder"]
