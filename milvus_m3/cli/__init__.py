"""The ``milvus-m3`` command line: a thin front over the Python API, and the only part that prints.

    parser.py    the options, with defaults and choices taken from the dataclasses they fill
    commands.py  one function per subcommand (each imports its heavy parts when it runs) and ``main``
    eval.py      the ``eval`` subcommand's options and runner

``--uri``, ``--token`` and ``--model`` default to ``$MILVUS_URI`` (else ``./milvus_m3.db``, Milvus Lite),
``$MILVUS_TOKEN`` and ``$MILVUS_M3_MODEL`` (else ``BAAI/bge-m3``). ``--help``, ``info`` and ``drop``
never load torch, and ``create`` reads the dense dim from the checkpoint's ``config.json``.
"""

from __future__ import annotations

from .commands import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
