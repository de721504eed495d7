"""Reliability round three (issue 27), the search side: BM25 on an empty collection, pages under tied
scores, tenants racing for one id, tenant values no search can reach, the event loop during deep async
searches. Each case runs on Milvus Lite and, where the engine matters, on the gRPC server tier."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from milvus_m3 import AsyncCollectionManager, AsyncHybridSearcher, CollectionManager, HybridSearcher
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration


@pytest.fixture(params=["lite", "server"])
def any_manager(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[CollectionManager]:
    if request.param == "lite":
        with CollectionManager(uri=str(tmp_path / "r.db")) as m:
            yield m
    else:
        yield request.getfixturevalue("server_manager")


# ----------------------------------------------------------------------------- 10: BM25, nothing stored


@pytest.mark.parametrize("legs", [("bm25",), ("dense", "bm25"), ("dense", "sparse", "bm25")])
def test_bm25_search_on_an_empty_collection_is_no_hits(
    any_manager: CollectionManager, legs: tuple[str, ...]
) -> None:
    enc = FakeEncoder(16)
    any_manager.create_collection(
        "empty_bm25", dense_dim=16, bm25=True, recreate=True, model_name=enc.model_name
    )
    searcher = HybridSearcher(any_manager, "empty_bm25", enc)
    assert searcher.search("what is stored here", legs=legs) == []
    assert searcher.search_batch(["a query", "another one"], legs=legs) == [[], []]
    for fusion in ("client", "server") if len(legs) > 1 else ("auto",):
        assert HybridSearcher(any_manager, "empty_bm25", enc, fusion=fusion).search("x y", legs=legs) == []
    # once a row is there, the same search finds it
    any_manager.upsert(
        "empty_bm25",
        ids=["a"],
        texts=["what is stored here"],
        embeddings=enc.encode_documents(["what is stored here"]),
    )
    assert [h.id for h in searcher.search("stored", legs=legs)] == ["a"]


def test_async_bm25_search_on_an_empty_collection_is_no_hits(tmp_path: Any) -> None:
    enc = FakeEncoder(16)

    async def main() -> list[Any]:
        async with AsyncCollectionManager(uri=str(tmp_path / "a.db")) as manager:
            manager.sync.create_collection(
                "e", dense_dim=16, bm25=True, recreate=True, model_name=enc.model_name
            )
            async with await AsyncHybridSearcher.create(manager, "e", enc) as searcher:
                return await searcher.search("anything at all")

    assert asyncio.run(main()) == []


def test_async_delete_with_a_filter_the_engine_rejects_is_a_filter_error(tmp_path: Any) -> None:
    """16, the async manager too: a raw filter Milvus refuses is a FilterError naming it, never a raw
    MilvusException; nothing is deleted."""
    from milvus_m3.errors import FilterError

    enc = FakeEncoder(16)

    async def main() -> int:
        async with AsyncCollectionManager(uri=str(tmp_path / "d.db")) as manager:
            manager.sync.create_collection("d", dense_dim=16, recreate=True, model_name=enc.model_name)
            await manager.upsert("d", ids=["a"], texts=["x"], embeddings=enc.encode_documents(["x"]))
            with pytest.raises(FilterError, match=r"'1 == 1'.*build it with milvus_m3\.filters\.F"):
                await manager.delete("d", filter="1 == 1")
            return await manager.count("d")

    assert asyncio.run(main()) == 1


# ----------------------------------------------------------------------------- 5: pages under ties


def _tied_collection(manager: CollectionManager, name: str) -> FakeEncoder:
    """240 rows of tenant 'a' in 4 groups of 60 identical texts (tied scores on every leg), and 40 rows of
    tenant 'b'."""
    enc = FakeEncoder(16)
    manager.create_collection(
        name,
        spec=__import__("milvus_m3").CollectionSpec(
            dense_dim=16, bm25=True, model_name=enc.model_name, partition_key="tenant"
        ),
        recreate=True,
    )
    words = ["vector search engine", "vector search", "search engine tuning", "engine oil"]
    texts = [words[i % 4] for i in range(240)]
    ids = [f"a{i:03d}" for i in range(240)]
    for start in range(0, 240, 80):
        chunk = texts[start : start + 80]
        manager.upsert(
            name, ids=ids[start : start + 80], texts=chunk, embeddings=enc.encode_documents(chunk), tenant="a"
        )
    other = [words[i % 4] for i in range(40)]
    manager.upsert(
        name,
        ids=[f"b{i:03d}" for i in range(40)],
        texts=other,
        embeddings=enc.encode_documents(other),
        tenant="b",
    )
    return enc


@pytest.mark.parametrize(
    "options",
    [
        {"legs": ("sparse",)},
        {"legs": ("dense",)},
        {"legs": ("bm25",)},
        {"legs": ("dense", "sparse")},
        {"legs": ("dense", "sparse", "bm25"), "ranker": "weighted"},
        {"legs": ("sparse", "bm25"), "ranker": "dbsf"},
    ],
    ids=lambda o: "+".join(o["legs"]) + "-" + o.get("ranker", "rrf"),
)
def test_pages_under_tied_scores_are_slices_of_one_ranking(
    any_manager: CollectionManager, options: dict[str, Any]
) -> None:
    enc = _tied_collection(any_manager, "tied")
    searcher = HybridSearcher(any_manager, "tied", enc)
    query = "vector search engine"
    whole = searcher.search(query, limit=200, tenant="a", candidate_limit=240, **options)
    pages = [
        searcher.search(query, limit=20, offset=20 * p, tenant="a", candidate_limit=240, **options)
        for p in range(10)
    ]
    paged = [h.id for pg in pages for h in pg]
    assert len(paged) == len(set(paged)) == 200, f"{200 - len(set(paged))} repeated ids across pages"
    assert paged == [h.id for h in whole]
    assert all(str(i).startswith("a") for i in paged)
    scores = [(-h.score, h.id) for pg in pages for h in pg]
    assert scores == sorted(scores)  # a total order: score, then id


# ----------------------------------------------------------------------------- 17: unreachable tenants


@pytest.mark.parametrize("bad", ["a\rb", "a\x00b", "\r"])
def test_string_tenants_no_search_can_reach_are_refused_at_write_time(
    any_manager: CollectionManager, bad: str
) -> None:
    from milvus_m3 import CollectionSpec
    from milvus_m3.errors import InputError

    enc = FakeEncoder(16)
    spec = CollectionSpec(dense_dim=16, model_name=enc.model_name, partition_key="tenant")
    any_manager.create_collection("t17", spec=spec, recreate=True)
    emb = enc.encode_documents(["one", "two"])
    with pytest.raises(InputError, match="tenant"):
        any_manager.upsert("t17", ids=["x", "y"], texts=["one", "two"], embeddings=emb, tenant=bad)
    with pytest.raises(InputError, match=r"row 1: tenant field 'tenant'"):
        any_manager.upsert(
            "t17", ids=["x", "y"], texts=["one", "two"], embeddings=emb, fields={"tenant": ["ok", bad]}
        )
    assert any_manager.count("t17") == 0
    any_manager.upsert(
        "t17", ids=["x"], texts=["one"], embeddings=enc.encode_documents(["one"]), tenant="a\r\nb"
    )
    assert [h.id for h in HybridSearcher(any_manager, "t17", enc).search("one", tenant="a\r\nb")] == ["x"]


def test_the_int64_minimum_as_a_tenant_is_refused_and_cli_tenants_of_an_int_field_are_ints(
    tmp_path: Any,
) -> None:
    import json
    import subprocess
    import sys

    from milvus_m3 import CollectionSpec, ScalarField
    from milvus_m3.errors import InputError

    enc = FakeEncoder(16)
    db = str(tmp_path / "i.db")
    spec = CollectionSpec(
        dense_dim=16,
        model_name=enc.model_name,
        partition_key="org",
        scalar_fields=(ScalarField(name="org", dtype="int64"),),
    )
    with CollectionManager(uri=db) as manager:
        manager.create_collection("ints", spec=spec, recreate=True)
        emb = enc.encode_documents(["alpha"])
        with pytest.raises(InputError, match="int64 minimum"):
            manager.upsert("ints", ids=["m"], texts=["alpha"], embeddings=emb, tenant=-(2**63))
        manager.upsert("ints", ids=["five"], texts=["alpha"], embeddings=emb, tenant=5)
        manager.upsert("ints", ids=["six"], texts=["alpha"], embeddings=emb, tenant=6)
        assert manager.count("ints") == 2
    # the CLI's --tenant is text: on an int64 tenant field it is read as an int
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS_", "PYTEST_"))}
    env["PYTHONPATH"] = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    code = (
        "import sys; from tests.fakes import FakeEncoder; import milvus_m3.cli.commands as c; "
        "c.embedder_from_args = lambda args, **kw: FakeEncoder(16); sys.exit(c.main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "search",
            "alpha",
            "--uri",
            db,
            "--collection",
            "ints",
            "--tenant",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["id"] for line in run.stdout.splitlines() if line.strip()] == ["five"]


# ----------------------------------------------------------------------------- 2: tenants racing


def test_two_tenants_racing_for_one_id_never_both_succeed(
    any_manager: CollectionManager, tmp_path: Any
) -> None:
    """Two threads upsert the same id for tenants A and B, 40 rounds: exactly one succeeds each round,
    and the stored row belongs to the one that did (before: both succeeded, one row silently replaced)."""
    import threading

    from milvus_m3 import CollectionSpec
    from milvus_m3.errors import InputError

    enc = FakeEncoder(16)
    spec = CollectionSpec(dense_dim=16, model_name=enc.model_name, partition_key="tenant")
    any_manager.create_collection("race", spec=spec, recreate=True)
    emb = enc.encode_documents(["contested text"])
    both = 0
    for r in range(40):
        doc = f"id{r}"
        wins: dict[str, bool] = {}
        start = threading.Barrier(2)

        def write(tenant: str, doc: str = doc, wins: dict[str, bool] = wins, start: Any = start) -> None:
            start.wait()
            try:
                any_manager.upsert("race", ids=[doc], texts=["contested text"], embeddings=emb, tenant=tenant)
                wins[tenant] = True
            except InputError:
                wins[tenant] = False

        threads = [threading.Thread(target=write, args=(t,)) for t in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        both += wins == {"A": True, "B": True}
        assert sum(wins.values()) == 1, (r, wins)
        winner = next(t for t, won in wins.items() if won)
        (row,) = any_manager.get("race", [doc])
        assert row["tenant"] == winner
    assert both == 0


# ----------------------------------------------------------------------------- 12: the event loop


def test_async_search_never_fuses_or_builds_hits_on_the_event_loop(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12: a deep async hybrid search spends its CPU (fusion, hit building) in a worker thread; the loop
    only awaits Milvus. Checked by where the work runs, not by timing."""
    import threading

    import milvus_m3.search.execute as execute

    enc = FakeEncoder(16)
    texts = [f"document {i} about topic {i % 17} and word{i % 29}" for i in range(600)]
    threads: set[int] = set()
    real_hit = execute.hit

    def recording_hit(*args: Any) -> Any:
        threads.add(threading.get_ident())
        return real_hit(*args)

    async def main() -> tuple[int, int]:
        async with AsyncCollectionManager(uri=str(tmp_path / "loop.db")) as manager:
            manager.sync.create_collection(
                "deep", dense_dim=16, bm25=True, recreate=True, model_name=enc.model_name
            )
            await manager.upsert(
                "deep", ids=[f"d{i}" for i in range(600)], texts=texts, embeddings=enc.encode_documents(texts)
            )
            loop_thread = threading.get_ident()
            monkeypatch.setattr(execute, "hit", recording_hit)
            async with await AsyncHybridSearcher.create(manager, "deep", enc) as searcher:
                hits = await searcher.search("topic 3 word7", limit=500, offset=50, candidate_limit=600)
            return loop_thread, len(hits)

    loop_thread, n = asyncio.run(main())
    assert n == 500
    assert threads and loop_thread not in threads


def test_an_empty_eval_corpus_is_one_clear_error(tmp_path: Any) -> None:
    """10, evaluation: an empty corpus says so before anything is written, never the engine's NaN."""
    import subprocess
    import sys

    data = tmp_path / "empty"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("", encoding="utf-8")
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "what"}\n', encoding="utf-8")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "milvus_m3",
            "eval",
            str(data),
            "--uri",
            str(tmp_path / "e.db"),
            "--modes",
            "bm25",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2, run.stderr
    assert "corpus.jsonl has no documents" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "e.db").exists()
