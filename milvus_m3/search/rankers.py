"""The ranker table: one ``RankerSpec`` per ranker, which every layer reads.

A ranker is its client-side fusion function (``fusion.py``), its Milvus ranker for ``hybrid_search``
(``MilvusRanker``: the builder in ``requests.py`` and when the engine's numbers are ``fuse``'s) or
None, its weight rule and its help text. Options validation (``options.check_ranker`` /
``check_weights``), the strategy (``execute.py``: can the engine fuse it, which function fuses it
here, which Milvus ranker a hybrid request carries), the eval modes and the CLI's ``--ranker`` all
look a name up here; adding a ranker is one entry and its fusion function.

A ranker without a Milvus ranker is always fused here, from one plain search per leg, on every
engine; ``fusion="server"`` is refused with it (``check_server_fusion``).

Imports neither pymilvus nor torch: the builders it names import pymilvus when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..collection.legs import LEG_TABLE
from ..engine.capabilities import Capabilities
from ..errors import ConfigError
from ..fusion import Normalize, dbsf, rrf, weighted
from .requests import rrf_ranker, weighted_ranker

__all__ = [
    "REGISTRY",
    "MilvusRanker",
    "RankerParams",
    "RankerSpec",
    "check_server_fusion",
    "nonnegative_weights",
    "ranker_spec",
    "unit_weights",
]

Lists = Sequence[Sequence[tuple[Any, float]]]
Ranked = list[tuple[Any, float]]


class RankerParams(Protocol):
    """What a ranker reads from a plan (``options.SearchPlan`` has these)."""

    @property
    def legs(self) -> tuple[str, ...]: ...
    @property
    def weights(self) -> tuple[float, ...]: ...
    @property
    def rrf_k(self) -> int: ...
    @property
    def norm_score(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class MilvusRanker:
    """A ranker Milvus's ``hybrid_search`` computes itself."""

    build: Callable[[RankerParams], Any]
    """The pymilvus ranker object for these params (built in ``requests.py``)."""
    fits: Callable[[RankerParams, Capabilities], bool]
    """Whether this engine's ranker gives the numbers of ``RankerSpec.fuse`` for these params."""
    by_rank: bool = False
    """Fuses by position: where the engine numbers ranks across a batch (``rrf_ranks_across_batch``), a
    request holds one query."""
    follows_fusion: bool = False
    """``fusion="client"``, or ``"auto"`` where ``hybrid_search`` is slow, fuses it here instead."""


@dataclass(frozen=True, kw_only=True)
class RankerSpec:
    """One ranker: see the module docstring."""

    name: str
    fuse: Callable[[Lists, RankerParams], Ranked]
    """The client-side fusion of one query's per-leg lists (each best first, scores higher-is-better)."""
    milvus: MilvusRanker | None
    """None: Milvus has no such ranker, so it is always fused here."""
    weight_rule: Callable[[Any, Sequence[str]], tuple[float, ...]]
    """Checks ``weights`` (one per leg) and returns them as floats, or raises ConfigError with the fix."""
    help: str


# --------------------------------------------------------------------- weight rules


def _shape(weights: Any, legs: Sequence[str]) -> list[Any]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(legs):
        count = {1: "one number", 2: "two numbers", 3: "three numbers"}.get(len(legs), f"{len(legs)} numbers")
        raise ConfigError(f"weights must be {count} ({', '.join(legs)}), one per leg, got {weights!r}")
    return list(weights)


def _not_all_zero(out: list[float]) -> tuple[float, ...]:
    if not any(out):
        raise ConfigError(
            f"weights are {'both' if len(out) == 2 else 'all'} 0, so every hit would score 0; "
            "give at least one weight > 0"
        )
    return tuple(out)


def _number(w: Any) -> bool:
    return not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w)


def unit_weights(weights: Any, legs: Sequence[str] = ("dense", "sparse")) -> tuple[float, ...]:
    """One weight per leg, each in [0, 1], not all 0 (Milvus's WeightedRanker rule; RRF's too)."""
    out: list[float] = []
    for name, w in zip(legs, _shape(weights, legs), strict=True):
        if not _number(w) or not 0.0 <= w <= 1.0:
            raise ConfigError(
                f"weights: the {name} weight is {w!r}; Milvus's WeightedRanker takes weights in [0, 1] "
                "(only their ratio matters: scale them so the larger is 1)"
            )
        out.append(float(w))
    return _not_all_zero(out)


def nonnegative_weights(weights: Any, legs: Sequence[str] = ("dense", "sparse")) -> tuple[float, ...]:
    """One weight per leg, each a finite number >= 0, not all 0 (a ranker computed here only)."""
    out: list[float] = []
    for name, w in zip(legs, _shape(weights, legs), strict=True):
        if not _number(w) or w < 0:
            raise ConfigError(f"weights: the {name} weight is {w!r}; weights must be finite numbers >= 0")
        out.append(float(w))
    return _not_all_zero(out)


# --------------------------------------------------------------------- the rankers


def _fuse_rrf(lists: Lists, p: RankerParams) -> Ranked:
    return rrf(lists, k=p.rrf_k, weights=p.weights)


def _fuse_weighted(lists: Lists, p: RankerParams) -> Ranked:
    norm: list[Normalize] = [LEG_TABLE[leg].normalize if p.norm_score else "none" for leg in p.legs]
    return weighted(lists, p.weights, normalize=norm)


def _fuse_dbsf(lists: Lists, p: RankerParams) -> Ranked:
    return dbsf(lists, weights=p.weights)


def _engine_rrf_fits(p: RankerParams, caps: Capabilities) -> bool:
    return len(set(p.weights)) == 1  # RRFRanker has no weights


def _engine_weighted_fits(p: RankerParams, caps: Capabilities) -> bool:
    if "bm25" in p.legs and caps.weighted_inverts_bm25:
        return False
    return p.norm_score or not caps.ignores_norm_score


REGISTRY: Mapping[str, RankerSpec] = {
    spec.name: spec
    for spec in (
        RankerSpec(
            name="rrf",
            fuse=_fuse_rrf,
            milvus=MilvusRanker(
                build=lambda p: rrf_ranker(p.rrf_k), fits=_engine_rrf_fits, by_rank=True, follows_fusion=True
            ),
            weight_rule=unit_weights,
            help="reciprocal rank fusion, w / (rrf_k + rank) summed over the legs (Milvus RRFRanker)",
        ),
        RankerSpec(
            name="weighted",
            fuse=_fuse_weighted,
            milvus=MilvusRanker(
                build=lambda p: weighted_ranker(*p.weights, norm_score=p.norm_score),
                fits=_engine_weighted_fits,
            ),
            weight_rule=unit_weights,
            help="weighted sum of scores mapped into [0, 1] by metric, or raw (Milvus WeightedRanker)",
        ),
        RankerSpec(
            name="dbsf",
            fuse=_fuse_dbsf,
            milvus=None,
            weight_rule=nonnegative_weights,
            help="distribution-based score fusion: each leg's scores scaled by its mean -+ 3 sd, "
            "summed (computed here on every engine)",
        ),
    )
}
"""Every ranker by name; ``options.RANKERS`` is its keys and ``RankerName`` names the same."""


def ranker_spec(name: Any) -> RankerSpec:
    """The entry of ``name``, or ConfigError listing the rankers."""
    spec = REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        listed = "; ".join(f"{s.name} ({s.help})" for s in REGISTRY.values())
        raise ConfigError(f"ranker must be one of {', '.join(REGISTRY)}, got {name!r}: {listed}")
    return spec


def check_server_fusion(fusion: str, ranker: str) -> None:
    """ConfigError when ``fusion="server"`` asks Milvus to fuse a ranker it does not have."""
    if fusion == "server" and ranker_spec(ranker).milvus is None:
        engine = [s.name for s in REGISTRY.values() if s.milvus is not None]
        raise ConfigError(
            f"fusion='server' cannot run ranker {ranker!r}: Milvus's hybrid_search has no such ranker, so "
            f"milvus-m3 always fuses it itself from one search per leg; use fusion='auto' or 'client' with "
            f"it, or a ranker Milvus has ({', '.join(engine)})"
        )
