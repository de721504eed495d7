"""The BEIR dataset loader: ``BeirDataset``, ``load_beir``, ``read_qrels`` and JSON-lines reading.

corpus.jsonl   {"_id", "title", "text"}        one document per line
queries.jsonl  {"_id", "text"}                 one query per line
qrels/<split>.tsv  query-id, corpus-id, score  (tab separated, with a header line)
"""

from __future__ import annotations

import csv
import json
import os
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
                rel = int(float(score))
            except ValueError:
                if lineno == 1:  # header
                    continue
                raise InputError(f"{p}:{lineno}: score {score!r} is not a number", row=lineno) from None
            qrels.setdefault(qid, {})[did] = rel
    return qrels


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
    queries: dict[str, str] = {}
    for _lineno, obj in _read_jsonl(queries_path):
        queries[str(obj["_id"])] = str(obj.get("text") or "").strip()
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
