"""The collection manager: schema and legs, rows, tenancy, model identity, and the async manager.

``CollectionManager`` creates, checks, fills and drops milvus-m3 collections; ``collection.schema``
declares what a collection holds (``CollectionSpec``). The modules here talk to Milvus only through
``engine.connection``.
"""

from __future__ import annotations

from .info import CollectionInfo
from .manager import CollectionManager
from .schema import CollectionSpec, ScalarField

__all__ = ["CollectionInfo", "CollectionManager", "CollectionSpec", "ScalarField"]
