"""Record -> document -> chunks -> embeddings -> Milvus rows, for one batch; each bad row is set aside.

Text
    ``text_field`` (default ``text``). With ``title_field`` (BEIR: ``title``) the embedded and stored
    text is ``f"{title} {text}"``, as FlagEmbedding's and BEIR's evaluation code join them, and the
    title is also kept in the metadata under ``title_field``.

Chunking
    With ``chunk_tokens`` each document is cut into windows of at most that many tokens overlapping
    by ``chunk_overlap`` tokens (``encoder.chunk_spans``, a ``ChunkingEncoder``); chunk ``i`` of document
    ``P`` is stored with id ``"P#i"``, ``parent_id`` P and ``chunk_index`` i, in a collection created
    with ``chunked=True``. Every document written to a chunked collection is stored this way (one chunk
    when ``chunk_tokens`` is None). A document written again with fewer chunks (a shorter text, or a
    larger ``chunk_tokens``) has its old chunks past the new last one deleted after the upsert.

Bad rows
    A missing id or text, empty or non-string text, NUL bytes, invalid UTF-8, text larger than the
    collection's text field (unchunked) or than ``MAX_CHUNKED_BYTES`` (decided from its size, before
    the encoder sees it), a later record with an id this run already wrote or saw in its batch (the
    first one is kept whatever the batch size; a resumed run knows the ids it read itself, so a
    duplicate of a record settled before the checkpoint is written over it), text beyond the encoder's
    document max length (when not chunking and not ``truncate``), a row-level ``InputError`` of the
    encoder and anything ``CollectionManager.prepare_rows`` refuses for one row (lone surrogates, ints
    beyond int64, colliding keys or deep nesting in metadata, ...): the row becomes a ``RowError`` and
    the rest of its batch goes on. Ids seen are kept in memory for the run (one entry per document).
    On a collection with a tenant field, a document whose id is stored for another tenant is a bad row
    too (``split_foreign``, checked when its batch is written: an upsert would move that tenant's row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._checks import CheckedTexts, is_valid_utf8
from ..collection.manager import CollectionManager, CollectionSpec, ScalarField
from ..collection.schema import ID_FIELD
from ..errors import ConfigError, InputError
from ..types import ChunkingEncoder, Encoder, LengthLimited, M3Embeddings
from .ids import IdChoices, check_id, content_id
from .options import IngestOptions
from .records import BadValue, Record, RowError, json_type

__all__ = [
    "MAX_CHUNKED_BYTES",
    "Batch",
    "Doc",
    "Origin",
    "Preparer",
    "check_encoder",
    "convert_scalar",
    "split_foreign",
    "write_owned",
]

MAX_CHUNKED_BYTES = 4 * 2**20
"""The largest document (UTF-8 bytes) ingestion embeds, chunked or not: tokenising costs about 150x its
size in memory (measured: a 32 MB line peaked at 5 GB), so larger ones are bad rows decided from size."""


@dataclass
class Doc:
    """A record that passed the checks: its id, the text to embed, metadata and declared fields."""

    source: str
    line: int
    index: int
    id: str | int
    text: str
    metadata: dict[str, Any]
    fields: dict[str, Any]


@dataclass
class Batch:
    """One prepared batch, as the producer hands it to the writer."""

    rows: list[dict[str, Any]]
    errors: list[RowError]
    read: int
    written_docs: int
    tokens: int
    truncated: int
    positions: dict[str, int]
    id_choices: dict[str, str | None]
    skipped: int
    first: tuple[str, int]
    digests: dict[str, str] = field(default_factory=dict)
    """Per input, the digest of its last record in the batch (what a resume checks against)."""
    origins: list[Origin] = field(default_factory=list)
    """Per row of ``rows``, its document's (input, line, id)."""


_Chunk = tuple[Doc, int, str]
"""(document, chunk index, chunk text)."""
Origin = tuple[str, int, "str | int"]
"""Where a row comes from: (input, line, document id) of its document."""


def check_encoder(options: IngestOptions, encoder: Encoder) -> int | None:
    """The encoder's document max length in tokens (None when it declares none); ConfigError when the
    chunking options need what it cannot do."""
    limit = encoder.document_max_length if isinstance(encoder, LengthLimited) else None
    max_tokens = int(limit) if isinstance(limit, int) else None
    chunk_tokens = options.chunk_tokens
    if chunk_tokens is None:
        return max_tokens
    if not isinstance(encoder, ChunkingEncoder):
        raise ConfigError(
            f"chunking needs an encoder with chunk_spans(text, max_tokens, overlap); {type(encoder).__name__} has none"
        )
    if max_tokens is not None and chunk_tokens > max_tokens - 2:
        raise ConfigError(
            f"chunk_tokens={chunk_tokens} does not fit the encoder's document max length of {max_tokens} tokens "
            f"(with <s> and </s>); use at most {max_tokens - 2}"
        )
    return max_tokens


def _bad(rec: Record, error: str, fld: str | None, doc_id: Any = None) -> RowError:
    return RowError(rec.source, rec.line, doc_id if isinstance(doc_id, (str, int)) else None, fld, error)


def _text_problem(text: str) -> str | None:
    if not text.strip():
        return "empty text"
    if "\x00" in text:
        return "text holds a NUL byte; strip control characters first"
    if not is_valid_utf8(text):
        return "text is not valid UTF-8 (lone surrogates)"
    return None


def _row_index(exc: InputError, n: int) -> int | None:
    """The batch row an encoder's or prepare_rows' InputError names, or None when it names none."""
    row = exc.row
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < n:
        return None
    return row


class Preparer:
    """Turns records into validated Milvus rows: ids, text, metadata, chunks, embeddings."""

    def __init__(
        self,
        options: IngestOptions,
        spec: CollectionSpec,
        manager: CollectionManager,
        encoder: Encoder,
        *,
        ids: IdChoices,
        formats: Mapping[str, str],
        max_tokens: int | None,
    ) -> None:
        self.options = options
        self.spec = spec
        self.manager = manager
        self.encoder = encoder
        self.ids = ids
        self.formats = formats
        self.max_tokens = max_tokens
        self.scalars: dict[str, ScalarField] = {f.name: f for f in spec.scalar_fields}
        self.written: dict[str | int, tuple[str, int]] = {}
        """Where each id this run wrote came from: a later record with the id is a duplicate whatever the batch."""

    # -- one record ----------------------------------------------------------------------------

    def to_doc(self, rec: Record) -> Doc | RowError:
        if rec.data is None:
            return _bad(rec, rec.error or "unreadable record", rec.field)
        data = rec.data
        beir = self.formats[rec.source] == "beir"
        id_field = self.ids.field_for(rec.source, data)
        raw_id = data.get(id_field) if id_field is not None else None
        if id_field is not None and (raw_id is None or raw_id == ""):
            return _bad(rec, f"missing id: the record has no {id_field!r} value", id_field)
        title_field = self.options.title_field or ("title" if beir else None)
        got = self._text(rec, raw_id, title_field)
        if isinstance(got, RowError):
            return got
        text, title = got
        too_big = self._size_problem(text)
        if too_big is not None:
            return _bad(rec, too_big, self.options.text_field, raw_id)
        pk, tenant_field = self.spec.partition_key, self.options.tenant_field or self.spec.partition_key
        tenant = data.get(tenant_field) if tenant_field is not None else None
        if pk is not None and (tenant is None or tenant == ""):
            return _bad(
                rec, f"missing tenant: the record has no {tenant_field!r} value", tenant_field, raw_id
            )
        if id_field is None:  # the same text of two tenants is two rows
            hashed = text if pk is None else f"{tenant}\x1f{text}"
            doc_id: str | int = content_id(hashed, id_type=self.spec.id_type)
        else:
            try:
                doc_id = check_id(raw_id, self.spec.id_type)
            except BadValue as exc:
                return _bad(rec, str(exc), id_field, raw_id)
        fields: dict[str, Any] = {}
        for name, sf in self.scalars.items():
            try:
                fields[name] = convert_scalar(sf, tenant if name == pk else data.get(name))
            except BadValue as exc:
                return _bad(rec, str(exc), name, doc_id)
        metadata = self._metadata(data, beir, title_field, title)
        return Doc(rec.source, rec.line, rec.index, doc_id, text, metadata, fields)

    def _text(self, rec: Record, raw_id: Any, title_field: str | None) -> tuple[str, str | None] | RowError:
        """(text to embed, title) of a record, or why it has none."""
        assert rec.data is not None
        data = rec.data
        text_field = self.options.text_field
        body = data.get(text_field)
        if body is None:
            return _bad(rec, f"missing text: the record has no {text_field!r} value", text_field, raw_id)
        if not isinstance(body, str):
            return _bad(rec, f"text must be a string, got {json_type(body)}", text_field, raw_id)
        title = data.get(title_field) if title_field else None
        if title is not None and not isinstance(title, str):
            return _bad(rec, f"title must be a string, got {json_type(title)}", title_field, raw_id)
        text = f"{title} {body}".strip() if title else body
        problem = _text_problem(text)
        if problem is not None:
            return _bad(rec, problem, text_field, raw_id)
        return text, title

    def _size_problem(self, text: str) -> str | None:
        """Sizes are checked before the encoder, which would tokenise all of it (a 32 MB line peaked at
        5 GB): unchunked, the text must fit the collection's text field; chunked, ``MAX_CHUNKED_BYTES``."""
        nbytes = len(text.encode("utf-8"))
        if self.options.chunk_tokens is None and nbytes > self.spec.text_max_length:
            return (
                f"text is {nbytes} bytes, the collection stores at most {self.spec.text_max_length}; split long "
                "documents with chunk_tokens (--chunk-tokens) into a chunked collection, or shorten the text"
            )
        if nbytes > MAX_CHUNKED_BYTES:
            return f"text is {nbytes} bytes, more than the {MAX_CHUNKED_BYTES} a document may have; split it first"
        return None

    def _metadata(
        self, data: Mapping[str, Any], beir: bool, title_field: str | None, title: str | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if beir and isinstance(data.get("metadata"), Mapping):
            metadata.update(data["metadata"])
        for name in self.options.metadata_fields:
            if name in data:
                metadata[name] = data[name]
        if title_field and title:
            metadata[title_field] = title
        return metadata

    # -- one batch -----------------------------------------------------------------------------

    def prepare(self, records: Sequence[Record], skipped: int) -> Batch:
        errors: list[RowError] = []
        docs: list[Doc] = []
        seen: dict[str | int, Doc] = {}
        positions: dict[str, int] = {}
        digests: dict[str, str] = {}
        for rec in records:
            positions[rec.source] = rec.index + 1
            if rec.digest is not None:
                digests[rec.source] = rec.digest
            got = self.to_doc(rec)
            if isinstance(got, RowError):
                errors.append(got)
                continue
            earlier = seen.get(got.id)
            first = (earlier.source, earlier.line) if earlier is not None else self.written.get(got.id)
            if first is not None:
                errors.append(
                    RowError(
                        got.source,
                        got.line,
                        got.id,
                        "id",
                        f"duplicate id (first at {first[0]}:{first[1]}); the first one is kept",
                    )
                )
                continue
            seen[got.id] = got
            docs.append(got)
        rows, written_docs, tokens, truncated, origins = self._rows(docs, errors)
        written = len(written_docs)
        self.written.update((d.id, (d.source, d.line)) for d in written_docs)
        order = {(r.source, r.line): k for k, r in enumerate(records)}
        errors.sort(key=lambda e: order.get((e.file, e.line), 0))
        choices = {s: c for s, c in self.ids.chosen.items() if s in positions}
        return Batch(
            rows,
            errors,
            len(records),
            written,
            tokens,
            truncated,
            positions,
            choices,
            skipped,
            (records[0].source, records[0].line),
            digests,
            origins,
        )

    def _chunks(self, docs: Sequence[Doc], errors: list[RowError]) -> list[_Chunk]:
        out: list[_Chunk] = []
        opts = self.options
        for doc in docs:
            if opts.chunk_tokens is None:
                out.append((doc, 0, doc.text))
                continue
            assert isinstance(self.encoder, ChunkingEncoder)
            try:
                spans = self.encoder.chunk_spans(doc.text, opts.chunk_tokens, opts.chunk_overlap)
            except InputError as exc:
                errors.append(RowError(doc.source, doc.line, doc.id, exc.field or "text", str(exc)))
                continue
            pieces = [doc.text[s:e] for s, e in spans]
            pieces = [p for p in pieces if p.strip()]
            if not pieces:
                errors.append(RowError(doc.source, doc.line, doc.id, "text", "text has no tokens to embed"))
                continue
            out.extend((doc, i, p) for i, p in enumerate(pieces))
        return out

    def _encode(
        self, chunks: list[_Chunk], errors: list[RowError]
    ) -> tuple[list[_Chunk], M3Embeddings | None]:
        """Embed; a row-level InputError (e.g. TextTooLongError) drops that row's document and retries."""
        while chunks:
            try:
                # checked once, by _text_problem when the record was read: the encoder trusts them
                return chunks, self.encoder.encode_documents(CheckedTexts(c[2] for c in chunks))
            except InputError as exc:
                row = _row_index(exc, len(chunks))
                if row is None:
                    raise
                doc = chunks[row][0]
                errors.append(RowError(doc.source, doc.line, doc.id, exc.field or "text", str(exc)))
                chunks = [c for c in chunks if c[0] is not doc]
        return chunks, None

    def _rows(
        self, docs: Sequence[Doc], errors: list[RowError]
    ) -> tuple[list[dict[str, Any]], list[Doc], int, int, list[Origin]]:
        """(rows, documents written, tokens embedded, documents truncated, origins of the rows) of a
        batch's documents."""
        chunks, emb = self._encode(self._chunks(docs, errors), errors)
        if emb is None or not chunks:
            return [], [], 0, 0, []
        cut_docs = {id(chunks[i][0]): chunks[i][0] for i in emb.truncated}
        if cut_docs and not self.options.truncate:
            chunks, emb = self._refuse_cut(chunks, emb, cut_docs.values(), errors)
            if not chunks:
                return [], [], 0, 0, []
        built = self._build_all(chunks, emb, errors)
        if built is None:
            return [], [], 0, 0, []
        rows, chunks, emb = built
        written = list({id(c[0]): c[0] for c in chunks}.values())
        tokens = sum(emb.token_counts) if emb.token_counts else 0
        truncated = len({id(c[0]) for c in chunks if id(c[0]) in cut_docs}) if self.options.truncate else 0
        return rows, written, tokens, truncated, [(d.source, d.line, d.id) for d, _, _ in chunks]

    def _refuse_cut(
        self, chunks: list[_Chunk], emb: M3Embeddings, cut: Iterable[Doc], errors: list[RowError]
    ) -> tuple[list[_Chunk], M3Embeddings]:
        """Without ``truncate``, a document the encoder cut is a bad row: drop its chunks."""
        cut_docs = list(cut)
        cut_ids = {id(d) for d in cut_docs}
        limit = f"{self.max_tokens} tokens" if self.max_tokens else "the encoder's max length"
        keep = [i for i, chunk in enumerate(chunks) if id(chunk[0]) not in cut_ids]
        for doc in cut_docs:
            errors.append(
                RowError(
                    doc.source,
                    doc.line,
                    doc.id,
                    "text",
                    f"text is longer than {limit} (the model's document max length); split long documents "
                    "with chunk_tokens (--chunk-tokens) or allow cutting them with truncate=True (--truncate)",
                )
            )
        return [chunks[i] for i in keep], emb.select(keep)

    def _build_all(
        self, chunks: list[_Chunk], emb: M3Embeddings, errors: list[RowError]
    ) -> tuple[list[dict[str, Any]], list[_Chunk], M3Embeddings] | None:
        """Rows of ``chunks``; a document ``prepare_rows`` refuses for one row is dropped and the rest retried."""
        while chunks:
            try:
                return self._build(chunks, emb), chunks, emb
            except InputError as exc:
                row = _row_index(exc, len(chunks))
                if row is None:
                    raise
                doc = chunks[row][0]
                keep = [i for i, c in enumerate(chunks) if c[0] is not doc]
                errors.append(RowError(doc.source, doc.line, doc.id, exc.field, str(exc)))
                chunks = [chunks[i] for i in keep]
                emb = emb.select(keep)
        return None

    def _build(self, chunks: Sequence[_Chunk], emb: M3Embeddings) -> list[dict[str, Any]]:
        chunked = self.spec.chunked
        ids: list[str | int] = [f"{d.id}#{i}" if chunked else d.id for d, i, _ in chunks]
        fields = {name: [d.fields[name] for d, _, _ in chunks] for name in self.scalars}
        return self.manager.prepare_rows(
            self.spec,
            ids=ids,
            texts=CheckedTexts(t for _, _, t in chunks),
            embeddings=emb,
            metadata=[d.metadata for d, _, _ in chunks],
            fields=fields or None,
            parent_ids=[str(d.id) for d, _, _ in chunks] if chunked else None,
            chunk_indexes=[i for _, i, _ in chunks] if chunked else None,
        )


_OWNER_LOOKUP = 1000
"""Ids per query when looking up who owns the ids of a batch."""


def split_foreign(
    manager: CollectionManager, collection: str, rows: Sequence[dict[str, Any]], origins: Sequence[Origin]
) -> tuple[list[dict[str, Any]], list[Origin], list[RowError]]:
    """(rows, their origins, bad rows): ``rows`` less those of each document one of whose ids is stored
    for another tenant of ``collection`` (an upsert would move that tenant's row), which becomes a bad row.
    Nothing is dropped on a collection without a tenant field."""
    pk = manager.spec(collection).partition_key
    if pk is None or not rows:
        return list(rows), list(origins), []
    ids = list(dict.fromkeys(row[ID_FIELD] for row in rows))
    owner: dict[Any, Any] = {}
    for start in range(0, len(ids), _OWNER_LOOKUP):
        for got in manager.get(collection, ids[start : start + _OWNER_LOOKUP], output_fields=[pk]):
            owner[got[ID_FIELD]] = got.get(pk)
    foreign: dict[tuple[str, int], RowError] = {}
    for row, (source, line, doc_id) in zip(rows, origins, strict=True):
        row_id = row[ID_FIELD]
        if row_id in owner and owner[row_id] != row.get(pk) and (source, line) not in foreign:
            foreign[(source, line)] = RowError(
                source,
                line,
                doc_id,
                ID_FIELD,
                f"id {row_id!r} is already stored for another tenant ({pk} {owner[row_id]!r}) in {collection!r}; "
                "an upsert would move that tenant's row. Use ids unique across tenants (e.g. prefix them with "
                "the tenant) or delete the other row first",
            )
    if not foreign:
        return list(rows), list(origins), []
    keep = [i for i, o in enumerate(origins) if (o[0], o[1]) not in foreign]
    return [rows[i] for i in keep], [origins[i] for i in keep], list(foreign.values())


_OWNER_RETRIES = 3


def write_owned(
    manager: CollectionManager,
    collection: str,
    rows: Sequence[dict[str, Any]],
    origins: Sequence[Origin],
    batch_size: int | None = None,
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Upsert ``rows`` (checked by ``split_foreign`` already); when another writer took one of their ids
    for another tenant since (the manager refuses the write), that document becomes a bad row and the
    rest is written again (upserts make that safe). (rows written, bad rows)."""
    kept, where = list(rows), list(origins)
    bad: list[RowError] = []
    for attempt in range(_OWNER_RETRIES + 1):
        try:
            if kept and batch_size is not None:
                manager.write_rows(collection, kept, batch_size=batch_size, mode="upsert")
            elif kept:
                manager.write_rows(collection, kept, mode="upsert")
            return kept, bad
        except InputError as exc:
            if attempt == _OWNER_RETRIES or exc.field != ID_FIELD:
                raise
            kept, where, more = split_foreign(manager, collection, kept, where)
            if not more:
                raise
            bad.extend(more)
    raise AssertionError("unreachable")  # pragma: no cover


def convert_scalar(sf: ScalarField, value: Any) -> Any:
    """CSV gives strings: turn them into the declared type (other values go to prepare_rows as they are)."""
    if not isinstance(value, str) or sf.dtype == "varchar":
        return value
    text = value.strip()
    if text == "":
        return None
    try:
        if sf.dtype == "int64":
            return int(text)
        if sf.dtype == "double":
            return float(text)
    except ValueError:
        raise BadValue(f"field {sf.name!r}: {value!r} is not a {sf.dtype}") from None
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise BadValue(f"field {sf.name!r}: {value!r} is not a bool (true/false)")
