"""The BEIR dataset loader: ``BeirDataset``, ``load_beir``, ``read_qrels`` and JSON-lines reading.

corpus.jsonl   {"_id", "title", "text"}        one document per line
queries.jsonl  {"_id", "text"}                 one query per line
qrels/<split>.tsv  query-id, corpus-id, score  (tab separated, with a header line)
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError

__all__ = ["BeirDataset", "load_beir", "read_qrels"]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR-format dataset, queries restricted to those judged in ``split``.

    Document texts are ``title + " " + text`` (stripped), as BEIR and MTEB feed them to encoders.
    """

    name: str
    split: str
    doc_ids: tuple[str, ...]
    doc_texts: tuple[str, ...]
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    qrels: Mapping[str, Mapping[str, int]]

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.doc_texts) or len(self.query_ids) != len(self.query_texts):
            raise InputError("BeirDataset: ids and texts must pair up")

    def __repr__(self) -> str:
        return (
            f"BeirDataset({self.name!r}, split={self.split!r}, docs={len(self.doc_ids)}, "
            f"queries={len(self.query_ids)}, judgements={sum(len(v) for v in self.qrels.values())})"
        )


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})", row=lineno) from None
            if not isinstance(obj, dict) or "_id" not in obj:
                raise InputError(
                    f"{path}:{lineno}: each line must be a JSON object with an '_id'", field="_id", row=lineno
                )
            yield lineno, obj


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """``query-id -> {corpus-id: relevance}`` from a BEIR qrels TSV (header line optional)."""
    qrels: dict[str, dict[str, int]] = {}
    p = Path(path)
    with p.open("r", encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise InputError(
                    f"{p}:{lineno}: expected query-id, corpus-id, score separated by tabs", row=lineno
                )
            qid, did, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                value = float(score)
            except ValueError:
                if lineno == 1:  # header
                    continue
                raise InputError(f"{p}:{lineno}: score {score!r} is not a number", row=lineno) from None
            if not math.isfinite(value):  # inf, 1e400 (inf as a float), nan
                raise InputError(
                    f"{p}:{lineno}: score {score!r} is not a finite number; give a relevance grade such as 0, 1 or 2",
                    row=lineno,
                )
            rel = int(value)
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def _read_queries(path: Path) -> dict[str, str]:
    """``query-id -> text``; an id that repeats with another text is refused (which one is meant?), with
    the same text a warning."""
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(path):
        qid, text = str(obj["_id"]), str(obj.get("text") or "").strip()
        if qid in queries:
            if queries[qid] != text:
                raise InputError(
                    f"{path}:{lineno}: query id {qid!r} repeats with another text ({_short_text(queries[qid])!r}, "
                    f"then {_short_text(text)!r}); give each query its own id",
                    field="_id",
                    row=lineno,
                )
            warnings.warn(
                f"{path}:{lineno}: query id {qid!r} repeats (same text); it is evaluated once",
                UserWarning,
                stacklevel=3,
            )
            continue
        queries[qid] = text
    return queries


def _short_text(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _judged_in_corpus(
    qrels: dict[str, dict[str, int]], corpus_ids: set[str], qrels_path: Path, corpus_path: Path
) -> dict[str, dict[str, int]]:
    """``qrels`` without the judgements of documents the corpus lacks (which no run can return: they
    would cap recall silently). Refused when no relevant document is left at all; a warning with the
    counts otherwise."""
    total = sum(len(rels) for rels in qrels.values())
    missing = sorted({d for rels in qrels.values() for d in rels if d not in corpus_ids})
    if not missing:
        return qrels
    kept = {q: {d: r for d, r in rels.items() if d in corpus_ids} for q, rels in qrels.items()}
    had = {q for q, rels in qrels.items() if any(r > 0 for r in rels.values())}
    left = {q for q, rels in kept.items() if any(r > 0 for r in rels.values())}
    gone = sum(1 for rels in qrels.values() for d in rels if d not in corpus_ids)
    counts = (
        f"{gone} of {total} judgements in {qrels_path} name {len(missing)} documents that {corpus_path} "
        f"lacks (first: {missing[0]!r})"
    )
    if had and not left:
        raise InputError(
            f"{counts}: no judged query has a relevant document in the corpus, so nothing can be evaluated; "
            "check that the qrels and the corpus come from the same dataset (and the split)",
            field="corpus-id",
        )
    lost = len(had - left)
    warnings.warn(
        f"{counts}; they are left out of the judgements (recall counts the documents that exist)"
        + (
            f", and {lost} {'query' if lost == 1 else 'queries'} left with no relevant document "
            f"{'is' if lost == 1 else 'are'} not evaluated"
            if lost
            else ""
        )
        + "; check that the qrels and the corpus come from the same dataset",
        UserWarning,
        stacklevel=3,
    )
    return kept


def load_beir(
    path: str | os.PathLike[str], *, split: str = "test", max_docs: int | None = None
) -> BeirDataset:
    """Read a BEIR dataset folder. Only queries judged in ``qrels/<split>.tsv`` are kept.

    ``max_docs`` keeps the first documents plus every judged one (for quick runs).
    """
    root = Path(path)
    corpus_path, queries_path, qrels_path = (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / f"{split}.tsv",
    )
    for p in (corpus_path, queries_path, qrels_path):
        if not p.is_file():
            raise ConfigError(
                f"{p} does not exist; a BEIR dataset folder holds corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
            )
    qrels = read_qrels(qrels_path)
    judged = {d for rels in qrels.values() for d in rels}
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    seen: set[str] = set()
    for lineno, obj in _read_jsonl(corpus_path):
        did = str(obj["_id"])
        if did in seen:
            raise InputError(f"{corpus_path}:{lineno}: document id {did!r} repeats", field="_id", row=lineno)
        seen.add(did)
        if max_docs is not None and len(doc_ids) >= max_docs and did not in judged:
            continue
        text = f"{obj.get('title') or ''} {obj.get('text') or ''}".strip()
        if not text:
            raise InputError(
                f"{corpus_path}:{lineno}: document {did!r} has no title and no text", field="text", row=lineno
            )
        doc_ids.append(did)
        doc_texts.append(text)
    if not doc_ids:
        raise InputError(
            f"{corpus_path} has no documents: there is nothing to search, so nothing can be evaluated; "
            "check the dataset folder (a BEIR corpus.jsonl holds one JSON document per line)",
            field="corpus",
        )
    qrels = _judged_in_corpus(qrels, seen, qrels_path, corpus_path)
    queries = _read_queries(queries_path)
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InputError(
            f"{qrels_path} judges {len(missing)} queries that {queries_path} lacks (first: {missing[0]!r})",
            field="query-id",
        )
    qids = [q for q in queries if q in qrels and any(r > 0 for r in qrels[q].values())]
    empty = [q for q in qids if not queries[q]]
    if empty:
        raise InputError(f"{queries_path}: query {empty[0]!r} has no text", field="text")
    return BeirDataset(
        name=root.name,
        split=split,
        doc_ids=tuple(doc_ids),
        doc_texts=tuple(doc_texts),
        query_ids=tuple(qids),
        query_texts=tuple(queries[q] for q in qids),
        qrels={q: dict(qrels[q]) for q in qids},
    )
