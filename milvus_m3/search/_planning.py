"""How ``HybridSearcher`` turns one call's ``SearchOptions`` into a ``SearchPlan``: the options checked
against the searcher's defaults and its collection (limits, legs, weights, candidates, output fields,
group-by, tenant, partitions, the rendered filter). A mixin of ``HybridSearcher``, which sets the
attributes declared below in its constructor. Imports neither pymilvus nor torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._checks import check_bool, check_int
from ..collection.bm25 import check_language
from ..collection.schema import (
    CHUNK_FIELD,
    ID_FIELD,
    METADATA_FIELD,
    PARENT_FIELD,
    TEXT_FIELD,
    CollectionSpec,
)
from ..collection.tenancy import check_partition_names, check_tenant, scope
from ..errors import ConfigError
from ..filters import render
from .options import (
    CLIENT_SIDE_MODES,
    DEFAULT_CANDIDATES,
    MAX_TOPK,
    Fusion,
    Leg,
    Mode,
    RankerName,
    SearchOptions,
    SearchPlan,
    check_legs,
    check_mode,
    check_ranker,
    check_rrf_k,
    check_weights,
)
from .rankers import check_server_fusion

__all__ = ["GROUPABLE_KINDS", "Planning", "filter_fields"]


class Planning:
    """The planning half of ``HybridSearcher`` (see the module docstring)."""

    collection: str
    spec: CollectionSpec
    mode: Mode
    ranker: RankerName
    rrf_k: int
    fusion: Fusion
    norm_score: bool
    candidate_limit: int | None
    legs: tuple[Leg, ...]
    weights: tuple[float, ...] | None
    _templates: bool
    _dialect: Any
    _partitions: bool
    _engine: str
    _fields: dict[str, str]
    _output_known: frozenset[str]
    _default_output: tuple[str, ...]
    _groupable: frozenset[str]

    def plan(self, options: SearchOptions) -> SearchPlan:
        """``options`` checked and planned as ``search`` would (``AsyncHybridSearcher`` runs the plan)."""
        return self._plan(options)

    def _plan(self, options: SearchOptions) -> SearchPlan:
        """``options`` checked against this searcher's defaults and collection."""
        limit = check_int("limit", options.limit, 1)
        offset = check_int("offset", options.offset, 0)
        depth = offset + limit
        if depth > MAX_TOPK:
            raise ConfigError(
                f"offset + limit is {depth}; Milvus returns at most {MAX_TOPK} hits per query "
                "(page with a smaller offset, or narrow the search with a filter)"
            )
        mode = self.mode if options.mode is None else check_mode(options.mode)
        ranker = self.ranker if options.ranker is None else check_ranker(options.ranker)
        check_server_fusion(self.fusion, ranker)
        rrf_k = self.rrf_k if options.rrf_k is None else check_rrf_k(options.rrf_k)
        legs = self._legs(mode, options.legs)
        weights = self._weights(options.weights, legs, ranker)
        norm = self.norm_score if options.norm_score is None else check_bool("norm_score", options.norm_score)
        candidates = self._candidates(options.candidate_limit, len(legs) > 1, depth)
        output_fields = self._output_fields(options.output_fields, options.group_by)
        pk = self.spec.partition_key
        tenant = None
        if options.tenant is not None:
            tenant = check_tenant(self.spec, options.tenant, collection=self.collection)
            output_fields = output_fields if pk in output_fields else (*output_fields, str(pk))
        partitions = check_partition_names(
            options.partition_names, supported=self._partitions, engine=self._engine
        )
        expr, params = render(
            scope(options.filter, pk, tenant),
            templates=self._templates and mode not in CLIENT_SIDE_MODES,  # m3 takes literals
            dialect=self._dialect,
            fields=self._fields,
        )
        language = None
        if options.language is not None:
            language = check_language(self.spec, options.language, collection=self.collection)
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

    def _legs(self, mode: Mode, legs: Sequence[str] | None) -> tuple[Leg, ...]:
        if mode in ("dense", "sparse"):
            if legs is not None and tuple(legs) != (mode,):
                raise ConfigError(
                    f"mode={mode!r} is the one leg {mode!r}; give mode='hybrid' with legs={legs!r}"
                )
            return ("dense",) if mode == "dense" else ("sparse",)
        if legs is None:
            return self.legs
        if mode in CLIENT_SIDE_MODES:
            raise ConfigError(f"mode {mode!r} fuses dense and sparse itself; legs= is for mode 'hybrid'")
        return check_legs(legs, self.spec.legs)

    def _weights(
        self, weights: Sequence[float] | None, legs: tuple[Leg, ...], ranker: RankerName
    ) -> tuple[float, ...]:
        """The call's weights (or the searcher's, for these legs), checked by the ranker's weight rule."""
        if weights is not None:
            return check_weights(weights, legs, ranker)
        if self.weights is not None:
            by_leg = dict(zip(self.legs, self.weights, strict=True))
            if all(leg in by_leg for leg in legs):
                return check_weights([by_leg[leg] for leg in legs], legs, ranker)
        return (1.0,) * len(legs)

    def _candidates(self, candidate_limit: int | None, fused: bool, depth: int) -> int:
        if candidate_limit is None:
            cand = self.candidate_limit
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

    def _output_fields(self, output_fields: Sequence[str] | None, group_by: str | None) -> tuple[str, ...]:
        if output_fields is None:
            out = self._default_output
        else:
            if isinstance(output_fields, str):
                raise ConfigError(
                    f"output_fields must be a list of field names, got the string {output_fields!r}"
                )
            out = tuple(output_fields)
            unknown = [f for f in out if f not in self._output_known]
            if unknown:
                raise ConfigError(
                    f"output_fields {unknown} are not fields of collection {self.collection!r}; "
                    f"choose from {sorted(self._output_known)}"
                )
        if group_by is not None:
            if group_by not in self._groupable:
                raise ConfigError(
                    f"group_by={group_by!r}: Milvus groups by a varchar, int64 or bool field of the collection; "
                    f"choose from {sorted(self._groupable) or 'none (create the collection with chunked=True for parent_id)'}"
                )
            if group_by not in out:
                out = (*out, group_by)
        return out


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
