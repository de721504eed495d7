"""Engine hits to ``Hit`` objects, ties in id order, one hit per group, the tie checks at a cut (execute.py's helpers)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..collection.schema import ID_FIELD, METADATA_FIELD, TEXT_FIELD, CollectionSpec
from ..fusion import id_order
from ..types import Hit

if TYPE_CHECKING:
    from .options import SearchPlan

__all__ = [
    "Ranked",
    "dense_index_kind",
    "first_per_group",
    "grouped_hits",
    "hit",
    "page",
    "tie_runs_past",
    "ties_by_id",
]

Ranked = list[tuple[Any, float]]

# --------------------------------------------------------------------- result mapping


def hit(doc: Any, distance: Any, entity: Mapping[str, Any]) -> Hit:
    """A new Hit from one engine hit; ``entity`` is copied, never changed."""
    fields = dict(entity)
    text = fields.pop(TEXT_FIELD, None)
    metadata = fields.pop(METADATA_FIELD, None)
    return Hit(doc, float(distance), text, {} if metadata is None else metadata, fields)


def tie_runs_past(result: Sequence[Mapping[str, Any]], depth: int, read: int) -> bool:
    """Whether the hits tied with the one at ``depth`` (the page's last) may go on past the ``read``
    hits an engine returned: the list is full and its last hit has that score."""
    if depth < 1 or len(result) < read or depth > len(result):
        return False
    return float(result[depth - 1]["distance"]) == float(result[read - 1]["distance"])


def page(hits: list[list[Hit]], plan: SearchPlan) -> list[list[Hit]]:
    """Each query's page: ``offset`` to ``offset + limit`` of its ranking (ordered by score, then id)."""
    return [h[plan.offset : plan.depth] for h in hits]


def ties_by_id(hits: list[Hit]) -> list[Hit]:
    """Equal scores in id order: Milvus sorts fused hits with an unstable sort, so without this the
    order of tied hits could change with the other queries of a batch."""
    if any(a.score == b.score for a, b in itertools.pairwise(hits)):
        hits.sort(key=lambda h: (-h.score, id_order(h.id)))
    return hits


def first_per_group(hits: list[Hit], group_by: str, limit: int) -> list[Hit]:
    """The first hit of each group, in the order of ``hits``, at most ``limit`` of them."""
    seen: set[Any] = set()
    out: list[Hit] = []
    for h in hits:
        key = h.text if group_by == TEXT_FIELD else h.fields.get(group_by)
        if key in seen:
            continue
        seen.add(key)
        out.append(h)
        if len(out) >= limit:
            break
    return out


def grouped_hits(result: Any, group_by: str, offset: int, limit: int) -> list[Hit]:
    seen: set[Any] = set()
    out: list[Hit] = []
    end = offset + limit
    for h in result:
        key = h["entity"].get(group_by)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > offset:
            out.append(hit(h[ID_FIELD], h["distance"], h["entity"]))
            if len(seen) >= end:
                break
    return ties_by_id(out)


def dense_index_kind(spec: CollectionSpec, default: str) -> str:
    kind = spec.dense_index.upper()
    return default.upper() if kind == "AUTO" else kind
