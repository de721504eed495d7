"""The retrieval legs: one entry per leg, read by every layer instead of string branches.

A leg is one vector field a search can run an ANN request on. Its entry says which field it is, how
the engine compares vectors there (the metric), where a stored row's value comes from (the
embeddings, or the engine itself from the text), what a query brings to it (its dense vector, its
sparse vector, or its text), how a weighted ranker maps its raw scores into [0, 1], when a
collection has it, and the help text the CLI and the docs show. The schema and the rows read it to
build a collection, the searcher to build and run requests, the CLI for ``--legs``, the evaluation
for its modes. A fourth leg is one entry here plus its request builder in ``search/requests.py``.

Pure: imports neither pymilvus nor torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..fusion import Normalize
from .fields import BM25_FIELD, DENSE_FIELD, SPARSE_FIELD

if TYPE_CHECKING:
    from ..types import M3Embeddings
    from .schema import CollectionSpec

__all__ = ["LEG_TABLE", "LegSpec", "QueryInput", "legs_of", "query_data", "searchable_rows"]

QueryInput = Literal["dense", "sparse", "text"]
"""What a query brings to a leg: its dense vector, its learned-sparse vector, or its raw text."""


@dataclass(frozen=True, kw_only=True)
class LegSpec:
    """One retrieval leg (see the module docstring)."""

    name: str
    field: str
    """The vector field the leg searches."""
    metric: str
    """The metric of the field's index: "IP" (inner product) or "BM25"."""
    query_input: QueryInput
    engine_filled: bool
    """True: the engine fills the field from the text (a function field); rows carry no value for it."""
    normalize: Normalize
    """How the weighted ranker maps this leg's raw scores into [0, 1] (``fusion.NORMALIZERS``)."""
    present: Callable[[CollectionSpec], bool]
    """Whether a collection of this spec has the leg."""
    missing_fix: str
    """What to do when a search names the leg and the collection lacks it."""
    help: str


def _always(spec: CollectionSpec) -> bool:
    return True


def _with_bm25(spec: CollectionSpec) -> bool:
    return bool(spec.bm25)


LEG_TABLE: Mapping[str, LegSpec] = {
    "dense": LegSpec(
        name="dense",
        field=DENSE_FIELD,
        metric="IP",
        query_input="dense",
        engine_filled=False,
        normalize="arctan",
        present=_always,
        missing_fix="",
        help="BGE-M3's dense [CLS] vector, inner product",
    ),
    "sparse": LegSpec(
        name="sparse",
        field=SPARSE_FIELD,
        metric="IP",
        query_input="sparse",
        engine_filled=False,
        normalize="arctan",
        present=_always,
        missing_fix="",
        help="BGE-M3's learned-sparse weights, inner product",
    ),
    "bm25": LegSpec(
        name="bm25",
        field=BM25_FIELD,
        metric="BM25",
        query_input="text",
        engine_filled=True,
        normalize="bm25",
        present=_with_bm25,
        missing_fix="create it with bm25=True (milvus-m3 create --bm25) for the bm25 leg",
        help="Milvus's BM25 function over the stored text (collections built with bm25=True)",
    ),
}
"""Every leg, in the order legs are listed, fused and reported."""


def legs_of(spec: CollectionSpec) -> tuple[str, ...]:
    """The legs a collection of ``spec`` has, in table order."""
    return tuple(name for name, leg in LEG_TABLE.items() if leg.present(spec))


def query_data(leg: str, emb: M3Embeddings, texts: Sequence[str] | None, rows: Sequence[int]) -> list[Any]:
    """What the queries ``rows`` bring to ``leg``: their dense vectors, sparse vectors or texts."""
    kind = LEG_TABLE[leg].query_input
    if kind == "dense":
        return [emb.dense[i] for i in rows]
    if kind == "sparse":
        return [emb.sparse[i] for i in rows]
    if texts is None:
        raise ValueError(f"the {leg} leg searches with the query text, and none was given")
    return [texts[i] for i in rows]


def searchable_rows(leg: str, emb: M3Embeddings) -> list[int]:
    """The queries ``leg`` can search: all, except those whose sparse vector is empty on a sparse leg
    (an empty sparse query matches nothing, and Milvus refuses it)."""
    if LEG_TABLE[leg].query_input == "sparse":
        return [i for i, s in enumerate(emb.sparse) if s]
    return list(range(len(emb)))
