"""The ``milvus-m3`` command line: a thin front over the Python API, and the only part that prints.

    milvus-m3 [-v] create  --collection NAME [--model M] [index options] [--exists-ok | --recreate]
    milvus-m3 [-v] ingest  FILE... --collection NAME [--metadata-fields a,b] [--on-error skip|fail] ...
    milvus-m3 [-v] search  "query" --collection NAME [--mode hybrid|dense|sparse|m3|m3-all] [--filter EXPR]
    milvus-m3 [-v] eval    DATASET_DIR [--modes ...] [-q]
    milvus-m3 [-v] info    [--collection NAME]
    milvus-m3 [-v] drop    --collection NAME [--yes]
    every command: [--uri URI] [--token USER:PASSWORD] [--db-name] [--timeout] [--retries] [TLS flags]

    parser.py    the options, with defaults and choices taken from the dataclasses they fill
    commands.py  one function per subcommand (each imports its heavy parts when it runs) and ``main``
    eval.py      the ``eval`` subcommand's options and runner
    _messages.py errors in terms of the flags, filter hints, and the files a command must not leave

``--uri``, ``--token`` and ``--model`` default to ``$MILVUS_URI`` (else ``./milvus_m3.db``, Milvus Lite),
``$MILVUS_TOKEN`` and ``$MILVUS_M3_MODEL`` (else ``BAAI/bge-m3``). ``--help``, ``info`` and ``drop``
never load torch, and ``create`` reads the dense dim from the checkpoint's ``config.json``. Exit codes:
0 done, 1 failure, 2 usage or input error, 3 ``ingest --strict-exit`` with rejected rows, 130 interrupted, 143 terminated (SIGTERM, stopped as on Ctrl-C).
"""

from __future__ import annotations

from .commands import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
