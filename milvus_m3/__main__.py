"""python -m milvus_m3: the milvus-m3 command line."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
