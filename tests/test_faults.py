"""Faults (issue 6): crashes, outages and concurrency, with nothing lost and nothing duplicated.

What other files cover is not repeated: test_server (a server stopped between batches or killed in the
middle of a write and back within the retry budget: the ingest retries and completes). Here:

- the server stays away longer than the retry budget: the ingest fails with MilvusUnavailableError,
  and once the server is back ``resume`` finishes with exactly the input's documents;
- eight threads searching while a writer upserts batches: no errors, every hit consistent with its id
  (no torn rows), counts never go backwards;
- ``kill -9`` of a real ``milvus-m3 ingest`` process at random points, then ``--resume``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection import CollectionManager
from milvus_m3.connection import RetryPolicy
from milvus_m3.errors import MilvusUnavailableError
from milvus_m3.ingest import ingest
from tests.fakes import FakeEncoder

WORDS = (
    "milvus vector sparse dense hybrid search index cat dog bird fish tree river mountain city music bread "
    "cheese wine coffee tea rain snow sun moon star ocean island forest desert garden book paper train"
).split()


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
            ingest([path], manager=manager, collection="docs", encoder=enc, batch_size=50, progress=False,
                   state_path=state, errors_path=errors, on_batch=on_batch)
        assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "127.0.0.1" in msg and "upsert" in msg and "server is running" in msg, msg
    assert down_after == [150]

    lite_server.start()
    with CollectionManager(lite_server.uri, timeout=5, retry=impatient) as manager:
        # What was acknowledged before the outage survived it: at least the 150 checkpointed documents.
        assert len(stored(manager, "docs")) >= 150
        report = ingest([path], manager=manager, collection="docs", encoder=enc, batch_size=50, progress=False,
                        state_path=state, errors_path=errors, resume=True)
        assert report.skipped >= 150 and report.failed == 0
        assert report.skipped + report.read == 500
        ids = stored(manager, "docs")
        assert ids == sorted(d["id"] for d in docs)  # exactly the input: none lost, none twice
        assert manager.count("docs") == 500
    assert not errors.exists() or errors.read_text() == ""
