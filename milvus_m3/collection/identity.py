"""Model identity: is the model a caller writes or searches with the one that built a collection?"""

from __future__ import annotations

from typing import Any

from ..errors import SchemaMismatchError
from ..types import Encoder, Fingerprinted
from .schema import CollectionSpec, model_key

__all__ = ["check_model", "identity", "same_model"]


def identity(encoder: Encoder) -> dict[str, Any]:
    """``check_collection`` keyword arguments for ``encoder``: dims, name and, where it declares one, fingerprint."""
    fp = encoder.model_fingerprint if isinstance(encoder, Fingerprinted) else None
    return {"dense_dim": encoder.dense_dim, "model_name": encoder.model_name, "model_fingerprint": fp}


def same_model(name_a: str | None, print_a: str | None, name_b: str | None, print_b: str | None) -> bool:
    """The one rule: by fingerprint when both sides have one; else by the last part of the name
    (``model_key``); a side with neither is unknown and agrees with anything (dims decide)."""
    if print_a and print_b:
        return print_a == print_b
    if not name_a or not name_b:
        return True
    return model_key(name_a) == model_key(name_b)


def check_model(
    name: str,
    stored: CollectionSpec,
    want_model: str | None,
    want_print: str | None,
    fix: str,
    *,
    first_write: bool = False,
) -> None:
    """Refuse another model than the one that built ``stored`` (see ``check_collection``); first_write:
    its model was recorded by the first write (``_model_registry``), not at create."""
    built, use = ("was first written", "first wrote") if first_write else ("was built", "built")
    if same_model(stored.model_name, stored.model_fingerprint, want_model, want_print):
        return
    if want_print and stored.model_fingerprint:
        raise SchemaMismatchError(
            f"collection {name!r} {built} with another model than {want_model or 'this one'!r} (model "
            f"fingerprint {stored.model_fingerprint[:12]}, this model's {want_print[:12]}; recorded name "
            f"{stored.model_name!r}): their vectors are not comparable; use the model that {use} it, or {fix}"
        )
    raise SchemaMismatchError(
        f"collection {name!r} {built} with model {stored.model_name!r}, not {want_model!r}: their vectors "
        f"are not comparable; use the same model (the one that {use} it), or {fix}"
    )
