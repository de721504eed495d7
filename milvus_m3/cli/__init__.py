"""The ``milvus-m3`` command line: a thin front over the Python API (the only part that prints).

    commands.py  the parser and one function per subcommand (each imports its heavy parts when it runs)
"""

from __future__ import annotations

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
