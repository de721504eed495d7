"""Planning, a pure function: one call's ``SearchOptions`` + the searcher's ``SearchDefaults`` + the
``SearchTarget`` (its collection and engine) -> a ``SearchPlan``.

``plan`` checks the options against the defaults and the collection (limits, mode, ranker, legs,
weights, candidates, output fields, group-by, tenant, partitions, language) and renders the filter;
it reads nothing but its arguments and sends nothing. Both searchers call it (``HybridSearcher``,
``AsyncHybridSearcher``), so both accept and refuse exactly the same calls.

A searcher builds its two inputs once: ``check_searcher_options`` checks its constructor options
before any round trip, ``search_defaults`` resolves the legs and weights against the collection's
spec, and ``SearchTarget.of`` derives what the checks need from the spec and the engine's flags.

Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._checks import check_bool, check_int
from ..collection.bm25 import check_language
from ..collection.schema import (
    CHUNK_FIELD,
    DENSE_FIELD,
    ID_FIELD,
    METADATA_FIELD,
    PARENT_FIELD,
    SPARSE_FIELD,
    TEXT_FIELD,
    CollectionSpec,
    default_output_fields,
)
from ..collection.tenancy import check_partition_names, check_tenant, scope
from ..engine.capabilities import Capabilities
from ..errors import ConfigError
from ..filters import render
from ..types import Reranker
from .options import (
    CLIENT_SIDE_MODES,
    DEFAULT_CANDIDATES,
    MAX_TOPK,
    Fusion,
    Leg,
    Mode,
    RankerName,
    SearcherOptions,
    SearchOptions,
    SearchPlan,
    check_candidate_limit,
    check_fusion,
    check_legs,
    check_mode,
    check_params,
    check_ranker,
    check_rrf_k,
    check_weights,
)
from .rankers import check_server_fusion
from .rerank_stage import check_rerank_depth, check_reranker

__all__ = [
    "GROUPABLE_KINDS",
    "SearchDefaults",
    "SearchTarget",
    "check_searcher_options",
    "filter_fields",
    "plan",
    "search_defaults",
]

_FILTER_KINDS = {"varchar": "varchar", "int64": "int64", "double": "double", "bool": "bool"}
GROUPABLE_KINDS = ("varchar", "int64", "bool")


def filter_fields(spec: CollectionSpec) -> dict[str, str]:
    """Field name -> filter kind, for checking structured filters against the collection."""
    fields: dict[str, str] = {ID_FIELD: spec.id_type, TEXT_FIELD: "varchar", METADATA_FIELD: "json"}
    if spec.chunked:
        fields[PARENT_FIELD] = "varchar"
        fields[CHUNK_FIELD] = "int64"
    for sf in spec.scalar_fields:
        fields[sf.name] = _FILTER_KINDS.get(sf.dtype, sf.dtype)
    return fields


# --------------------------------------------------------------------- the two inputs, built once


@dataclass(frozen=True, kw_only=True)
class SearchDefaults:
    """A searcher's checked defaults, built once from its constructor options: what a call's None
    options become."""

    mode: Mode
    ranker: RankerName
    rrf_k: int
    weights: tuple[float, ...] | None
    """One per leg of ``legs`` (None: all 1)."""
    candidate_limit: int | None
    legs: tuple[Leg, ...]
    norm_score: bool
    fusion: Fusion
    reranker: Reranker | None
    rerank_depth: int
    dense_params: Mapping[str, Any]
    sparse_params: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class SearchTarget:
    """What a plan is checked against: the collection (name, spec) and the engine's flags, with what
    derives from them (filterable fields, output fields, group-by fields), computed once."""

    collection: str
    spec: CollectionSpec
    templates: bool
    dialect: Any
    partitions: bool
    engine: str
    fields: Mapping[str, str]
    output_known: frozenset[str]
    default_output: tuple[str, ...]
    groupable: frozenset[str]

    @classmethod
    def of(cls, collection: str, spec: CollectionSpec, caps: Capabilities) -> SearchTarget:
        fields = filter_fields(spec)
        return cls(
            collection=collection,
            spec=spec,
            templates=caps.filter_templates,
            dialect=caps.filter_dialect,
            partitions=caps.partitions,
            engine=caps.display_name,
            fields=MappingProxyType(fields),
            output_known=frozenset(fields) | {DENSE_FIELD, SPARSE_FIELD},
            default_output=tuple(default_output_fields(spec)),
            groupable=frozenset(
                name for name, kind in fields.items() if kind in GROUPABLE_KINDS and name != ID_FIELD
            ),
        )


def check_searcher_options(options: SearcherOptions) -> SearcherOptions:
    """The constructor options checked (all but legs and weights, which need the collection), so a typo
    fails before any round trip; values normalised (``rrf_k`` an int, params dicts)."""
    fusion = check_fusion(options.fusion)
    reranker = check_reranker(options.reranker)
    rerank_depth = check_rerank_depth(options.rerank_depth)
    mode = check_mode(options.mode)
    ranker = check_ranker(options.ranker)
    check_server_fusion(fusion, ranker)
    cand = options.candidate_limit
    return dataclasses.replace(
        options,
        fusion=fusion,
        reranker=reranker,
        rerank_depth=rerank_depth,
        mode=mode,
        ranker=ranker,
        rrf_k=check_rrf_k(options.rrf_k),
        norm_score=check_bool("norm_score", options.norm_score),
        candidate_limit=None if cand is None else check_candidate_limit(cand),
        dense_params=check_params("dense_params", options.dense_params),
        sparse_params=check_params("sparse_params", options.sparse_params),
    )


def search_defaults(options: SearcherOptions, spec: CollectionSpec) -> SearchDefaults:
    """Checked constructor options (``check_searcher_options``) with their legs and weights checked
    against the collection's legs."""
    legs = check_legs(spec.legs if options.legs is None else options.legs, spec.legs)
    weights = None if options.weights is None else check_weights(options.weights, legs, options.ranker)
    return SearchDefaults(
        mode=options.mode,
        ranker=options.ranker,
        rrf_k=options.rrf_k,
        weights=weights,
        candidate_limit=options.candidate_limit,
        legs=legs,
        norm_score=options.norm_score,
        fusion=options.fusion,
        reranker=options.reranker,
        rerank_depth=options.rerank_depth,
        dense_params=MappingProxyType(dict(options.dense_params or {})),
        sparse_params=MappingProxyType(dict(options.sparse_params or {})),
    )


# --------------------------------------------------------------------- the plan


def plan(options: SearchOptions, defaults: SearchDefaults, target: SearchTarget) -> SearchPlan:
    """``options`` checked against the searcher's ``defaults`` and its ``target``, as a ``SearchPlan``."""
    limit = check_int("limit", options.limit, 1)
    offset = check_int("offset", options.offset, 0)
    depth = offset + limit
    if depth > MAX_TOPK:
        raise ConfigError(
            f"offset + limit is {depth}; Milvus returns at most {MAX_TOPK} hits per query "
            "(page with a smaller offset, or narrow the search with a filter)"
        )
    mode = defaults.mode if options.mode is None else check_mode(options.mode)
    ranker = defaults.ranker if options.ranker is None else check_ranker(options.ranker)
    check_server_fusion(defaults.fusion, ranker)
    rrf_k = defaults.rrf_k if options.rrf_k is None else check_rrf_k(options.rrf_k)
    legs = _legs(mode, options.legs, defaults, target.spec)
    weights = _weights(options.weights, legs, ranker, defaults)
    norm = defaults.norm_score if options.norm_score is None else check_bool("norm_score", options.norm_score)
    candidates = _candidates(options.candidate_limit, len(legs) > 1, depth, defaults)
    output_fields = _output_fields(options.output_fields, options.group_by, target)
    spec = target.spec
    pk = spec.partition_key
    tenant = None
    if options.tenant is not None:
        tenant = check_tenant(spec, options.tenant, collection=target.collection)
        output_fields = output_fields if pk in output_fields else (*output_fields, str(pk))
    partitions = check_partition_names(
        options.partition_names, supported=target.partitions, engine=target.engine
    )
    expr, params = render(
        scope(options.filter, pk, tenant),
        templates=target.templates and mode not in CLIENT_SIDE_MODES,  # m3 takes literals
        dialect=target.dialect,
        fields=target.fields,
    )
    language = None
    if options.language is not None:
        language = check_language(spec, options.language, collection=target.collection)
    return SearchPlan(
        limit=limit,
        offset=offset,
        mode=mode,
        ranker=ranker,
        rrf_k=rrf_k,
        weights=weights,
        candidates=candidates,
        expr=expr,
        params=params,
        output_fields=output_fields,
        group_by=options.group_by,
        tenant=tenant,
        partition_names=partitions,
        legs=legs,
        norm_score=norm,
        language=language,
    )


def _legs(
    mode: Mode, legs: Sequence[str] | None, defaults: SearchDefaults, spec: CollectionSpec
) -> tuple[Leg, ...]:
    if mode in ("dense", "sparse"):
        if legs is not None and tuple(legs) != (mode,):
            raise ConfigError(f"mode={mode!r} is the one leg {mode!r}; give mode='hybrid' with legs={legs!r}")
        return ("dense",) if mode == "dense" else ("sparse",)
    if legs is None:
        return defaults.legs
    if mode in CLIENT_SIDE_MODES:
        raise ConfigError(f"mode {mode!r} fuses dense and sparse itself; legs= is for mode 'hybrid'")
    return check_legs(legs, spec.legs)


def _weights(
    weights: Sequence[float] | None, legs: tuple[Leg, ...], ranker: RankerName, defaults: SearchDefaults
) -> tuple[float, ...]:
    """The call's weights (or the searcher's, for these legs), checked by the ranker's weight rule."""
    if weights is not None:
        return check_weights(weights, legs, ranker)
    if defaults.weights is not None:
        by_leg = dict(zip(defaults.legs, defaults.weights, strict=True))
        if all(leg in by_leg for leg in legs):
            return check_weights([by_leg[leg] for leg in legs], legs, ranker)
    return (1.0,) * len(legs)


def _candidates(candidate_limit: int | None, fused: bool, depth: int, defaults: SearchDefaults) -> int:
    if candidate_limit is None:
        cand = defaults.candidate_limit
    else:
        cand = check_int("candidate_limit", candidate_limit, 1)
    if cand is None:
        return DEFAULT_CANDIDATES
    if fused and cand < depth:
        raise ConfigError(
            f"candidate_limit {cand} is smaller than offset + limit = {depth}: fusion cannot return hits "
            f"no field search fetched; raise candidate_limit to >= {depth} or leave it None"
        )
    if cand > MAX_TOPK:
        raise ConfigError(f"candidate_limit {cand} is above Milvus's per-request cap {MAX_TOPK}")
    return cand


def _output_fields(
    output_fields: Sequence[str] | None, group_by: str | None, target: SearchTarget
) -> tuple[str, ...]:
    if output_fields is None:
        out = target.default_output
    else:
        if isinstance(output_fields, str):
            raise ConfigError(
                f"output_fields must be a list of field names, got the string {output_fields!r}"
            )
        out = tuple(output_fields)
        unknown = [f for f in out if f not in target.output_known]
        if unknown:
            raise ConfigError(
                f"output_fields {unknown} are not fields of collection {target.collection!r}; "
                f"choose from {sorted(target.output_known)}"
            )
    if group_by is not None:
        if group_by not in target.groupable:
            raise ConfigError(
                f"group_by={group_by!r}: Milvus groups by a varchar, int64 or bool field of the collection; "
                f"choose from {sorted(target.groupable) or 'none (create the collection with chunked=True for parent_id)'}"
            )
        if group_by not in out:
            out = (*out, group_by)
    return out
