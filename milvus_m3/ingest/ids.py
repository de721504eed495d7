"""Document ids: content hashes, the id field chosen per input, an id value as the collection stores it.

``id_field`` names the id column. ``None`` (the default) picks, per file, ``id`` or else ``_id`` when the
file's first record has one (BEIR corpora: ``_id``), and content hashes otherwise; the choice is recorded
in the checkpoint so that a resumed run makes the same one. ``hash_ids=True`` always hashes. A content
hash is ``blake2b(text as UTF-8, digest_size=16).hexdigest()`` of the text as embedded (32 hex
characters); for an int64-id collection, the first 8 digest bytes as a big-endian signed int.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .records import BadValue, json_type

__all__ = ["IdChoices", "check_id", "content_id"]


def content_id(text: str, *, id_type: str = "varchar") -> str | int:
    """The stable id of a text: blake2b-128 of its UTF-8 as 32 hex characters (int64 collections: the
    first 8 digest bytes as a big-endian signed int)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    if id_type == "int64":
        return int.from_bytes(digest[:8], "big", signed=True)
    return digest.hex()


def check_id(raw: Any, id_type: str) -> str | int:
    """The id as a collection with ``id_type`` ids stores it; BadValue says why ``raw`` cannot be one."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise BadValue(f"id must be a string or an integer, got {json_type(raw)}")
    if id_type == "varchar":
        return str(raw)
    if isinstance(raw, int):
        return raw
    try:
        return int(raw.strip())
    except ValueError:
        raise BadValue(f"id {raw!r} is not an integer, and the collection has int64 ids") from None


class IdChoices:
    """The id field of each input: given (``id_field``), never (``hash_ids``), or chosen from its first
    record and then kept (``chosen`` goes to the checkpoint; ``known`` comes back from it)."""

    def __init__(
        self,
        *,
        id_field: str | None,
        hash_ids: bool,
        formats: Mapping[str, str],
        known: Mapping[str, str | None],
    ) -> None:
        self.id_field = id_field
        self.hash_ids = hash_ids
        self.formats = formats
        self.chosen: dict[str, str | None] = dict(known)

    def field_for(self, source: str, data: Mapping[str, Any]) -> str | None:
        """The field holding the id of ``source``'s records (None: content hashes)."""
        if self.hash_ids:
            return None
        if self.id_field is not None:
            return self.id_field
        if source not in self.chosen:
            if self.formats[source] == "beir":
                self.chosen[source] = "_id"
            else:
                self.chosen[source] = "id" if "id" in data else "_id" if "_id" in data else None
        return self.chosen[source]
