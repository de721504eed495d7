"""Faults (issue 6): crashes, outages and concurrency, with nothing lost and nothing duplicated.

What other files cover is not repeated: test_server (a server stopped between batches or killed in the
middle of a write and back within the retry budget: the ingest retries and completes). Here:

- the server stays away longer than the retry budget: the ingest fails with MilvusUnavailableError,
  and once the server is back ``resume`` finishes with exactly the input's documents;
- eight threads searching while a writer upserts batches: no errors, every hit consistent with its id
  (no torn rows), rewritten rows never missing, counts never go backwards.

``kill -9`` of a real ``milvus-m3 ingest``: test_cli kills one at three points (30 and 150 records, a
random moment) and resumes; test_bad_input's CLI bad-file ingest kills one at three more random points
(during start-up, and at two random checkpoints) over a JSONL and a CSV full of bad rows, and checks
after the last ``--resume`` that exactly the good rows are stored and each bad row is reported once.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager
from milvus_m3.engine.connection import RetryPolicy
from milvus_m3.errors import MilvusUnavailableError
from milvus_m3.ingest import ingest
from tests.fakes import FakeEncoder

WORDS = [
    "milvus",
    "vector",
    "sparse",
    "dense",
    "hybrid",
    "search",
    "index",
    "cat",
    "dog",
    "bird",
    "fish",
    "tree",
    "river",
    "mountain",
    "city",
    "music",
    "bread",
    "cheese",
    "wine",
    "coffee",
    "tea",
    "rain",
    "snow",
    "sun",
    "moon",
    "star",
    "ocean",
    "island",
    "forest",
    "desert",
    "garden",
    "book",
    "paper",
    "train",
]


def corpus(n: int, *, seed: int, prefix: str = "doc") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"id": f"{prefix}-{i:05d}", "text": " ".join(rng.choices(WORDS, k=rng.randint(4, 12))), "n": i}
        for i in range(n)
    ]


def write_jsonl(path: Path, docs: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    return path


def stored(manager: CollectionManager, name: str) -> list[str]:
    """Every stored id, sorted, duplicates kept (a duplicate primary key would show twice)."""
    rows = manager.client.query(name, filter='id != ""', output_fields=["id"], limit=16_384)
    return sorted(str(r["id"]) for r in rows)


# ------------------------------------------------------------------ outage longer than the retry budget


@pytest.mark.server
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_outage_beyond_the_retry_budget_then_resume(how: str, lite_server: Any, tmp_path: Path) -> None:
    enc = FakeEncoder(dim=16)
    docs = corpus(500, seed=11)
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    state, errors = tmp_path / "state.json", tmp_path / "errors.jsonl"
    impatient = RetryPolicy(attempts=4, initial_backoff=0.05, max_backoff=0.2, total_seconds=1.5)
    down_after: list[int] = []

    def on_batch(report: Any) -> None:
        if not down_after and report.written >= 150:
            down_after.append(report.written)
            lite_server.stop() if how == "stop" else lite_server.kill()

    with CollectionManager(lite_server.uri, timeout=5, retry=impatient) as manager:
        manager.create_collection("docs", dense_dim=16, model_name=enc.model_name)
        t0 = time.monotonic()
        with pytest.raises(MilvusUnavailableError) as err:
            ingest(
                [path],
                manager=manager,
                collection="docs",
                encoder=enc,
                batch_size=50,
                progress=False,
                state_path=state,
                errors_path=errors,
                on_batch=on_batch,
            )
        assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "127.0.0.1" in msg and "upsert" in msg and "server is running" in msg, msg
    assert down_after == [150]

    lite_server.start()
    with CollectionManager(lite_server.uri, timeout=5, retry=impatient) as manager:
        # What was acknowledged before the outage survived it: at least the 150 checkpointed documents.
        assert len(stored(manager, "docs")) >= 150
        report = ingest(
            [path],
            manager=manager,
            collection="docs",
            encoder=enc,
            batch_size=50,
            progress=False,
            state_path=state,
            errors_path=errors,
            resume=True,
        )
        assert report.skipped >= 150 and report.failed == 0
        assert report.skipped + report.read == 500
        ids = stored(manager, "docs")
        assert ids == sorted(d["id"] for d in docs)  # exactly the input: none lost, none twice
        assert manager.count("docs") == 500
    assert not errors.exists() or errors.read_text() == ""


# ------------------------------------------------------------------ readers while a writer writes

N_READERS = 8
N_BATCHES = 24
BATCH_DOCS = 12
HOT = [f"hot-{j}" for j in range(6)]
"""Ids every write batch rewrites: a reader must never see one with parts of two versions."""


def _doc(doc_id: str, batch: int) -> tuple[str, dict[str, Any]]:
    rng = random.Random(f"{doc_id}/{batch}")
    text = f"{doc_id} written in batch {batch}: " + " ".join(rng.choices(WORDS, k=8))
    return text, {"id": doc_id, "batch": batch, "sha": _sha(text)}


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.integration
def test_eight_searchers_and_a_writer(tmp_path: Path) -> None:
    """On the embedded default (Milvus Lite 2.5.1), with one shared CollectionManager.

    Each write batch rewrites the HOT ids and adds new ones; every text and metadata encodes the id and
    batch, so a reader can check each hit against itself. Readers search in every mode, every fourth
    search asking for the HOT ids (all must be there), and count now and then (never down, never
    below the batches finished before the search began).

    Measured without a guard in milvus-m3: Lite's upsert is a delete then an insert, so a concurrent
    reader sees rewritten rows vanish (count of 50 rewritten rows read as 0); and a search filtered on
    the primary key running while an upsert runs kills Lite's embedded server (every later call:
    "Fail connecting to server on unix:...sock"). A readers-writer lock around the manager's calls
    (writes exclusive, writer first; reads shared) makes both go away.
    """
    from milvus_m3.filters import F
    from milvus_m3.search import HybridSearcher

    enc = FakeEncoder(dim=32)
    name = "live"
    # A dead engine should fail the test in seconds, not after the default 12-24 s of retries per thread.
    manager = CollectionManager(
        str(tmp_path / "live.db"), retry=RetryPolicy(attempts=3, initial_backoff=0.05, total_seconds=3)
    )
    manager.create_collection(name, dense_dim=32, model_name=enc.model_name)
    first = [_doc(i, 0) for i in HOT]
    manager.upsert(
        name,
        ids=HOT,
        texts=[t for t, _ in first],
        embeddings=enc.encode_documents([t for t, _ in first]),
        metadata=[m for _, m in first],
    )

    done = threading.Event()
    start = threading.Barrier(N_READERS + 1)
    errors: list[str] = []
    searches = [0] * N_READERS
    written_batches: list[int] = []

    def writer() -> None:
        try:
            start.wait()
            for b in range(1, N_BATCHES + 1):
                ids = HOT + [f"b{b:02d}-{i}" for i in range(BATCH_DOCS)]
                docs = [_doc(i, b) for i in ids]
                texts = [t for t, _ in docs]
                manager.upsert(
                    name,
                    ids=ids,
                    texts=texts,
                    embeddings=enc.encode_documents(texts),
                    metadata=[m for _, m in docs],
                    batch_size=7,
                )  # one upsert call per 7 rows
                written_batches.append(b)
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(f"writer: {type(exc).__name__}: {exc}")
        finally:
            done.set()

    def reader(r: int) -> None:
        searcher = HybridSearcher(manager, name, enc)
        rng = random.Random(r)
        last_count = 0
        last_hot: dict[str, int] = {}
        try:
            start.wait()
            while not done.is_set() or searches[r] < 4:
                kind = searches[r] % 4
                mode = ("hybrid", "dense", "sparse", "hybrid")[kind]
                query = " ".join(rng.choices(WORDS, k=3))
                # every fourth search asks for the rows the writer keeps rewriting: all must be there
                flt = (
                    F.in_("id", HOT)
                    if kind == 3
                    else F.ge("metadata.batch", rng.randint(0, 3))
                    if r % 2
                    else None
                )
                floor = len(written_batches)  # batches fully written before this search started
                hits = searcher.search(query, limit=20, mode=mode, filter=flt)
                searches[r] += 1
                assert len({h.id for h in hits}) == len(hits), "an id twice in one result"
                if kind == 3:
                    missing = sorted(set(HOT) - {h.id for h in hits})
                    assert not missing, f"rows {missing} vanished while being rewritten (upsert not atomic)"
                for h in hits:
                    meta = h.metadata
                    # no torn rows: the text, its metadata and its id belong to one write
                    assert (
                        meta["id"] == h.id
                        and h.text is not None
                        and h.text.startswith(f"{h.id} written in batch ")
                    )
                    assert meta["sha"] == _sha(h.text), f"{h.id}: text and metadata of different writes"
                    assert h.text.split(": ", 1)[0].endswith(f"batch {meta['batch']}")
                    assert math.isfinite(h.score)
                    if not h.id.startswith("hot-"):
                        assert meta["batch"] == int(h.id[1:3])
                    else:  # a rewritten row never goes back to an older version
                        assert meta["batch"] >= last_hot.get(h.id, 0), f"{h.id} went back in time"
                        last_hot[h.id] = meta["batch"]
                if searches[r] % 5 == 0:
                    n = manager.count(name)
                    assert n >= last_count, f"count went down: {last_count} -> {n}"
                    assert n >= len(HOT) + BATCH_DOCS * floor, "a finished batch is not visible"
                    assert n <= len(HOT) + BATCH_DOCS * N_BATCHES
                    last_count = n
        except BaseException as exc:
            errors.append(f"reader {r}: {type(exc).__name__}: {exc}")
            done.set()

    threads = [threading.Thread(target=reader, args=(r,), name=f"reader-{r}") for r in range(N_READERS)]
    threads.append(threading.Thread(target=writer, name="writer"))
    pymilvus_log = logging.getLogger("pymilvus")
    level = pymilvus_log.level
    pymilvus_log.setLevel(logging.CRITICAL)  # a dead engine makes every thread log pages of retries
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        pymilvus_log.setLevel(level)
    try:
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert not errors, "\n".join(errors[:10])
        assert written_batches == list(range(1, N_BATCHES + 1))
        assert min(searches) >= 4, searches
        # afterwards: exactly what was written, each hot id at its last version
        rows = manager.client.query(name, filter='id != ""', output_fields=["id", "metadata"], limit=16_384)
        assert len(rows) == manager.count(name) == len(HOT) + BATCH_DOCS * N_BATCHES
        assert {r["id"]: r["metadata"]["batch"] for r in rows if r["id"].startswith("hot-")} == dict.fromkeys(
            HOT, N_BATCHES
        )
    finally:
        manager.close()
