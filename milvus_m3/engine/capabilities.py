"""What the Milvus engine behind a URI can do, and its measured quirks, as named flags decided once.

Every module that behaves differently on Milvus Lite and on a Milvus server reads one of these flags;
none of them asks "is this Lite?" itself. ``Connection.capabilities`` detects the engine once
(Lite answers UNIMPLEMENTED to GetVersion; a server gives its version) and returns one of these.

This module imports neither pymilvus nor torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

__all__ = [
    "LITE_CAPABILITIES",
    "MIN_SERVER_VERSION",
    "Capabilities",
    "capabilities_for_version",
    "server_capabilities",
]

logger = logging.getLogger("milvus_m3.capabilities")

MIN_SERVER_VERSION = (2, 4, 0)
"""Sparse vectors and hybrid search arrived in Milvus 2.4."""

LITE_UNSAFE_ID_CHARS = ("'", "\\", "\n", "\r")
"""Characters Milvus Lite 2.5 mishandles in ids inside its own internal queries (``'`` and ``\\``:
wrong rows or a crashed engine; LF and CR: every later ``hybrid_search``, ``get`` and ``delete``
reaching the row fails)."""

SERVER_DENSE_INDEXES = ("AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "SCANN")
LITE_DENSE_INDEXES = ("AUTOINDEX", "FLAT", "IVF_FLAT")
SERVER_SPARSE_INDEX_ALGOS = ("TAAT_NAIVE", "DAAT_WAND", "DAAT_MAXSCORE")
SERVER_BM25_ANALYZERS = ("standard", "english", "chinese", "jieba", "whitespace", "icu", "lindera")
LITE_BM25_ANALYZERS = ("standard", "english", "chinese", "jieba", "whitespace")
"""Milvus Lite 2.5.1 accepts icu and lindera (and language analyzers built on them) at create time,
then fails every insert after 30 s of retries; the analyzers listed here insert and search there."""
MULTI_LANGUAGE_ANALYZER_VERSION = (2, 5, 11)
"""Milvus documents its multi-language analyzer as "Compatible with Milvus 2.5.11+"."""


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What one engine can do (features) and how it misbehaves (quirks, each measured on Milvus Lite 2.5.1).

    Features:
      filter_templates: ``{name}`` placeholders with ``filter_params`` (servers >= 2.5).
      dense_index_types / default_dense_index: dense index types it builds, and the one "auto" means.
      nullable_fields: scalar fields may be declared nullable.
      partition_key: a field may be the partition key (``is_partition_key``, ``num_partitions``) and be
          filtered on. Milvus Lite 2.5.1 builds such a collection but then refuses every filter on that
          field ("Invalid expr"), so there the tenant field is a plain field, scoped by the same filter.
      partitions: named partitions (``create_partition``, ``partition_names``). Milvus Lite answers
          UNIMPLEMENTED to create/list/drop partition and *ignores* ``partition_name(s)`` on upsert,
          search, query and delete (a search reads every row, a delete deletes from all), so
          milvus-m3 refuses partition names there.
      bm25_analyzers: the BM25 analyzer names (``schema.BM25_ANALYZERS``) it can run, not only accept.
      multi_language_analyzer: Milvus's multi-language analyzer (``multi_analyzer_params`` on the text
          field, each row's analyzer picked by a language field, ``analyzer_name`` per query): servers
          >= 2.5.11 (MULTI_LANGUAGE_ANALYZER_VERSION). Milvus Lite 2.5.1 accepts such a collection,
          inserts and searches it, but ignores the multi analyzer: every row and query is analysed as
          standard (measured: "run" does not find "the runners were running quickly" under an English
          analyzer, "学习" with analyzer_name "zh" does not find "我喜欢机器学习和自然语言处理", while
          "running" and the whole Chinese sentence match as in a standard collection;
          tests/integration/test_multilang.py pins it). So it is False there and
          ``CollectionSpec.check_engine`` refuses ``bm25_languages`` before anything is created.
    Quirks:
      filter_dialect: how string literals are escaped in filter expressions ("lite" or "server").
      rrf_ranks_across_batch: a hybrid request with several queries numbers RRF ranks across the whole
          batch (query 2's first hit gets ``1 / (k + hits of query 1 + 1)``): send one query per request.
      slow_hybrid_search: its ``hybrid_search`` costs about 5x a dense search, so ``fusion="auto"``
          computes RRF client-side from one dense and one sparse search.
      hybrid_output_by_quoted_id: a hybrid search reads output fields with an internal query that quotes
          ids with ``'`` unescaped, so a hit whose id holds ``'`` gets another row's fields.
      unsafe_id_chars: characters refused in varchar ids (its internal queries break on them).
      ignores_norm_score: ``WeightedRanker(norm_score=False)`` still maps scores through arctan.
      weighted_inverts_bm25: ``WeightedRanker`` maps a BM25 leg's scores as a distance
          (``1 - 2 * arctan(s) / pi``), so the best BM25 match counts least: fuse such legs client-side.
      one_process_per_file: an engine in a local file that only one process may open.
      reads_during_writes_unsafe: reads running during an upsert of existing ids see the rows vanish
          (and an id-filtered search can crash the engine), so writes to one file run alone.
    """

    engine: Literal["lite", "server"]
    version: tuple[int, int, int] | None
    filter_templates: bool
    dense_index_types: tuple[str, ...]
    default_dense_index: str
    deploy_mode: str = ""
    """What the server says it runs as ("STANDALONE", "CLUSTER", ...); empty for Lite or when unknown."""
    nullable_fields: bool = True
    partition_key: bool = True
    partitions: bool = True
    bm25_analyzers: tuple[str, ...] = SERVER_BM25_ANALYZERS
    multi_language_analyzer: bool = False
    filter_dialect: Literal["lite", "server"] = "server"
    rrf_ranks_across_batch: bool = False
    slow_hybrid_search: bool = False
    hybrid_output_by_quoted_id: bool = False
    unsafe_id_chars: tuple[str, ...] = ()
    ignores_norm_score: bool = False
    weighted_inverts_bm25: bool = False
    one_process_per_file: bool = False
    reads_during_writes_unsafe: bool = False
    sparse_index_algos: tuple[str, ...] = ()
    """SPARSE_INVERTED_INDEX's ``inverted_index_algo`` values it takes (servers >= 2.5); () : none, the
    index is built with ``drop_ratio_build`` only (Milvus Lite 2.5.1, servers 2.4)."""
    sparse_wand_deprecated: bool = False
    """The SPARSE_WAND index type is deprecated (servers >= 2.5: SPARSE_INVERTED_INDEX with
    ``inverted_index_algo="DAAT_WAND"`` replaces it), so a new collection is refused it."""

    @property
    def is_lite(self) -> bool:
        """For display and tests: behaviour is decided by the named flags above, not by this."""
        return self.engine == "lite"

    @property
    def display_name(self) -> str:
        """How messages name the engine ("Milvus Lite", "this Milvus server")."""
        return "Milvus Lite" if self.engine == "lite" else "this Milvus server"


LITE_CAPABILITIES = Capabilities(
    engine="lite",
    version=None,
    filter_templates=False,
    dense_index_types=LITE_DENSE_INDEXES,
    default_dense_index="AUTOINDEX",
    nullable_fields=False,
    partition_key=False,
    partitions=False,
    bm25_analyzers=LITE_BM25_ANALYZERS,
    multi_language_analyzer=False,
    filter_dialect="lite",
    rrf_ranks_across_batch=True,
    slow_hybrid_search=True,
    hybrid_output_by_quoted_id=True,
    unsafe_id_chars=LITE_UNSAFE_ID_CHARS,
    ignores_norm_score=True,
    weighted_inverts_bm25=True,
    one_process_per_file=True,
    reads_during_writes_unsafe=True,
)


def server_capabilities(version: tuple[int, int, int], deploy_mode: str = "") -> Capabilities:
    return Capabilities(
        engine="server",
        version=version,
        filter_templates=version >= (2, 5, 0),
        dense_index_types=SERVER_DENSE_INDEXES,
        default_dense_index="HNSW",
        deploy_mode=deploy_mode,
        sparse_index_algos=SERVER_SPARSE_INDEX_ALGOS if version >= (2, 5, 0) else (),
        sparse_wand_deprecated=version >= (2, 5, 0),
        multi_language_analyzer=version >= MULTI_LANGUAGE_ANALYZER_VERSION,
    )


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def capabilities_for_version(raw: str, *, uri: str = "the server", deploy_mode: str = "") -> Capabilities:
    """Capabilities of a Milvus server that reported version ``raw`` ("v2.6.4", "2.4.0-rc1", ...).

    Below 2.4 (no sparse vectors, no hybrid search) is refused with a ConfigError. A version that does
    not parse is taken for a current server, with a warning.
    """
    version = parse_version(raw)
    if version is None:
        logger.warning("could not parse the Milvus version %r from %s; assuming a current server", raw, uri)
        return server_capabilities((2, 6, 0), deploy_mode)
    if version < MIN_SERVER_VERSION:
        raise ConfigError(
            f"Milvus at {uri} is version {'.'.join(map(str, version))}; milvus-m3 needs >= 2.4 (sparse "
            "vectors and hybrid search). Upgrade the server (docker/docker-compose.yml pins a current one)."
        )
    return server_capabilities(version, deploy_mode)
