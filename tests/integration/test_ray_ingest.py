"""ray_ingest on a local Ray instance (``ray.init(num_cpus=2)``, started once for the session, tests/fixtures_ray.py) with the
tiny checkpoint: the loopback gRPC server tier with two embedding actors that write in parallel, and
Milvus Lite written by the driver.

(a) 500 SciFact passages -> exactly 500 rows whose vectors equal single-process M3Embedder output;
(b) the same job again -> 500 (and skip_existing passes over all of them);
(c) an actor killed mid-job (os._exit, once, through the encoder seam) -> still exactly 500;
(d) Milvus Lite through the driver: rows and bad-row reports equal those of ``ingest()``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError
from milvus_m3.ingest import ingest
from milvus_m3.types import Encoder, M3Embeddings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCIFACT = next(
    (p for p in (REPO.parent / "shared/data/scifact", Path("/work/shared/data/scifact")) if p.is_dir()),
    REPO.parent / "shared/data/scifact",
)
N = 500


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 500 SciFact passages, as a BEIR corpus file (``_id``, ``title``, ``text``)."""
    src = SCIFACT / "corpus.jsonl"
    if not src.is_file():
        pytest.skip(f"{src} is not present")
    out = tmp_path_factory.mktemp("scifact") / "corpus.jsonl"
    with open(src, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as dst:
        for _, line in zip(range(N), fh, strict=False):
            dst.write(line)
    return out


def factory(tiny_checkpoint: Path) -> Any:
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory

    return M3EmbedderFactory(model=str(tiny_checkpoint), device="cpu", precision="fp32", batch_size=16)


def two_actors(**kw: Any) -> Any:
    from milvus_m3.ingest.ray_engine import RayOptions

    # two actors and a reader fit in num_cpus=2
    return RayOptions(actors=2, cpus_per_actor=0.75, cpus_per_reader=0.25, **kw)


def new_collection(manager: CollectionManager, name: str, tiny_checkpoint: Path, dim: int) -> str:
    manager.create_collection(name, spec=CollectionSpec(dense_dim=dim, model_name=str(tiny_checkpoint)))
    return name


def passages(path: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        ids.append(str(row["_id"]))
        texts.append(f"{row['title']} {row['text']}".strip() if row["title"] else row["text"])
    return ids, texts


def stored(manager: CollectionManager, name: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = manager.get(name, list(ids), output_fields=["text", "metadata", "dense", "sparse"])
    return {str(r["id"]): r for r in rows}


def assert_vectors_equal(rows: dict[str, dict[str, Any]], ids: Sequence[str], want: M3Embeddings) -> None:
    for i, doc_id in enumerate(ids):
        row = rows[doc_id]
        np.testing.assert_allclose(np.asarray(row["dense"], dtype=np.float32), want.dense[i], atol=1e-5)
        got = {int(k): float(v) for k, v in dict(row["sparse"]).items()}
        assert sorted(got) == sorted(want.sparse[i]), doc_id
        np.testing.assert_allclose(
            [got[k] for k in sorted(got)], [want.sparse[i][k] for k in sorted(got)], atol=1e-5
        )


class CrashOnce:
    """An encoder factory whose encoder ends its process (``os._exit``) at its ``after``-th batch, once
    per job: the first process to create ``marker`` dies; every later one (the restarted actor too)
    embeds normally."""

    def __init__(self, inner: Any, marker: Path, after: int) -> None:
        self.inner, self.marker, self.after = inner, str(marker), after

    def __call__(self) -> Encoder:
        return _Crashing(self.inner(), self.marker, self.after)


class _Crashing:
    def __init__(self, inner: Any, marker: str, after: int) -> None:
        self.inner, self.marker, self.after, self.calls = inner, marker, after, 0
        self.dense_dim, self.model_name = inner.dense_dim, inner.model_name
        self.document_max_length = inner.document_max_length

    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        self.calls += 1
        if self.calls == self.after:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the actor process dies mid-batch, as an OOM kill or a lost node would
        result: M3Embeddings = self.inner.encode_documents(texts)
        return result

    def encode_queries(self, texts: Sequence[str]) -> M3Embeddings:
        result: M3Embeddings = self.inner.encode_queries(texts)
        return result


# ------------------------------------------------------------------------------------------- server


def test_server_two_actors_vectors_equal_single_process_and_reruns_stay_at_500(
    ray_local: Any, server_manager: CollectionManager, tiny_checkpoint: Path, tiny_embedder: Any, corpus: Path
) -> None:
    from milvus_m3.ingest.ray_engine import ray_ingest

    name = new_collection(server_manager, "ray_scifact", tiny_checkpoint, tiny_embedder.dense_dim)
    run = dict(manager=server_manager, collection=name, encoder=factory(tiny_checkpoint), batch_size=32)
    report = ray_ingest([corpus], ray_options=two_actors(), **run)  # type: ignore[arg-type]
    assert (report.read, report.written, report.failed, report.chunks) == (N, N, 0, N)
    assert server_manager.count(name) == N

    # (a) the vectors are single-process M3Embedder's
    ids, texts = passages(corpus)
    rows = stored(server_manager, name, ids)
    assert len(rows) == N and all(rows[i]["text"] == t for i, t in zip(ids, texts, strict=True))
    assert rows[ids[0]]["metadata"]["title"]  # BEIR titles kept as metadata, as ingest() keeps them
    assert_vectors_equal(rows, ids, tiny_embedder.encode_documents(texts))

    # (b) the same job again: still 500; with skip_existing nothing is embedded again
    again = ray_ingest([corpus], ray_options=two_actors(), **run)  # type: ignore[arg-type]
    assert (again.written, server_manager.count(name)) == (N, N)
    skipped = ray_ingest([corpus], ray_options=two_actors(skip_existing=True), **run)  # type: ignore[arg-type]
    assert (skipped.read, skipped.skipped, skipped.written, server_manager.count(name)) == (N, N, 0, N)


def test_an_actor_killed_mid_job_still_gives_exactly_500(
    ray_local: Any,
    server_manager: CollectionManager,
    tiny_checkpoint: Path,
    tiny_embedder: Any,
    corpus: Path,
    tmp_path: Path,
) -> None:
    from milvus_m3.ingest.ray_engine import ray_ingest

    name = new_collection(server_manager, "ray_crash", tiny_checkpoint, tiny_embedder.dense_dim)
    marker = tmp_path / "crashed"
    report = ray_ingest(
        [corpus],
        manager=server_manager,
        collection=name,
        encoder=CrashOnce(factory(tiny_checkpoint), marker, after=3),
        ray_options=two_actors(),
        batch_size=32,
    )
    assert marker.exists()  # an actor did die mid-job
    assert (report.read, report.written, report.failed) == (N, N, 0)  # each batch counted once
    assert server_manager.count(name) == N
    ids, _ = passages(corpus)
    assert sorted(stored(server_manager, name, ids)) == sorted(ids)


# --------------------------------------------------------------------------------------------- Lite


def test_lite_through_the_cli_is_written_by_the_driver_with_the_rows_and_bad_rows_of_ingest(
    ray_local: Any,
    tiny_checkpoint: Path,
    tiny_embedder: Any,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(d) ``milvus-m3 ingest --engine ray`` into Milvus Lite (run in this process, so it joins the
    module's Ray instance): the driver writes the rows of two actors; rows and bad rows equal ingest()'s."""
    from milvus_m3.cli import main
    from milvus_m3.ingest.ray_engine import RayOptions, ray_ingest

    good = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()[:40]]
    lines = [json.dumps({"id": d["_id"], "text": d["text"], "lang": "en"}) for d in good]
    lines[3] = "{not json"
    lines[7] = json.dumps({"id": "x7", "text": ""})
    lines[11] = json.dumps({"id": "x11"})
    lines[20] = json.dumps({"id": good[19]["_id"], "text": "a duplicate of the row before it"})
    lines[33] = json.dumps({"id": "x33", "text": "nul \x00 byte"})
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ids = [d["_id"] for d in good]

    db = tmp_path / "ray.db"
    argv = ["ingest", str(src), "--collection", "docs", "--uri", str(db), "--model", str(tiny_checkpoint)]
    argv += ["--metadata-fields", "lang", "--batch-size", "8", "--errors", str(tmp_path / "ray-errors.jsonl")]
    ray_args = ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "0.75", "--device", "cpu"]
    assert main([*argv, *ray_args, "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main([*argv, *ray_args, "--resume"]) == 2
    assert "--resume is for --engine local" in capsys.readouterr().err
    with CollectionManager(str(db)) as lite:
        assert lite.capabilities.one_process_per_file
        ray_rows = stored(lite, "docs", ids)
        with pytest.raises(ConfigError, match="skip_existing needs a Milvus server"):
            ray_ingest(
                [src],
                manager=lite,
                collection="docs",
                encoder=factory(tiny_checkpoint),
                ray_options=RayOptions(skip_existing=True),
            )

    with CollectionManager(str(tmp_path / "one.db")) as one:
        name = new_collection(one, "docs", tiny_checkpoint, tiny_embedder.dense_dim)
        local = ingest(
            [src],
            manager=one,
            collection=name,
            encoder=tiny_embedder,
            errors_path=tmp_path / "errors.jsonl",
            progress=False,
            metadata_fields=["lang"],
            batch_size=8,
        )
        one_rows = stored(one, name, ids)

    assert (report["read"], report["written"], report["failed"]) == (local.read, local.written, local.failed)
    assert (local.read, local.written, local.failed) == (40, 35, 5)
    assert (tmp_path / "ray-errors.jsonl").read_text() == (tmp_path / "errors.jsonl").read_text()
    assert report["errors"] == [e.to_json() for e in local.errors]
    assert sorted(ray_rows) == sorted(one_rows) and len(ray_rows) == 35
    for doc_id, row in one_rows.items():
        got = ray_rows[doc_id]
        assert (got["text"], got["metadata"]) == (row["text"], row["metadata"])
        np.testing.assert_allclose(got["dense"], row["dense"], atol=1e-5)
        assert dict(got["sparse"]).keys() == dict(row["sparse"]).keys()


def test_an_actor_cannot_open_a_lite_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The actor's manager for Milvus Lite validates rows but refuses to talk to the file."""
    from milvus_m3.engine.connection import Connection
    from milvus_m3.ingest._ray_tasks import _DriverWritesOnly

    uri = str(tmp_path / "x.db")
    manager = CollectionManager(connection=Connection(uri, client=_DriverWritesOnly(uri)))
    assert manager.capabilities.one_process_per_file
    with pytest.raises(ConfigError, match="writes Milvus Lite from the driver only"):
        manager.list_collections()
    assert not Path(uri).exists()
    manager.close()


def test_options_and_inputs_are_checked_before_ray_starts(tmp_path: Path) -> None:
    from milvus_m3.ingest.ray_engine import RayOptions, _check_inputs, _format_of

    for bad in ({"actors": 0}, {"gpus_per_actor": -1}, {"cpus_per_actor": 0}, {"retries": -1}):
        with pytest.raises(ConfigError):
            RayOptions(**bad)
    with pytest.raises(ConfigError, match="cannot read stdin"):
        _check_inputs(["-"])
    with pytest.raises(ConfigError, match="does not exist"):
        _check_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match="given twice"):
        _check_inputs(["s3://b/a.jsonl", "s3://b/a.jsonl"])
    assert _format_of("s3://bucket/beir/corpus.jsonl", "auto") == "beir"
    assert _format_of("gs://bucket/part-0001.csv.gz", "auto") == "csv"
    with pytest.raises(ConfigError, match="pass format="):
        _format_of("s3://bucket/part-0001", "auto")


def test_the_read_step_streams_a_uri_through_pyarrow_and_keeps_it_as_the_source(tmp_path: Path) -> None:
    import pickle

    from milvus_m3.ingest import IngestOptions
    from milvus_m3.ingest._ray_tasks import PAYLOAD, read_batches

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"t{i}"}) + "\n" for i in range(5)))
    uri = src.as_uri()  # file://...: the same pyarrow filesystem layer as s3:// or gs://
    opts = IngestOptions(batch_size=2)
    got = [
        pickle.loads(r[PAYLOAD])
        for r in read_batches({"index": 0, "source": uri}, options=opts, formats={uri: "jsonl"})
    ]
    assert [len(b.records) for b in got] == [2, 2, 1] and [b.number for b in got] == [0, 1, 2]
    assert {r.source for b in got for r in b.records} == {uri}
    assert [r.data for b in got for r in b.records] == [{"_id": f"d{i}", "text": f"t{i}"} for i in range(5)]
    assert all(b.id_choices == {uri: "_id"} for b in got)  # chosen from the first record, as ingest() does


@pytest.mark.integration
def test_the_actor_factory_passes_the_token_budget_and_threads(tiny_checkpoint: Path) -> None:
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory

    texts = ["a short text", "a somewhat longer text " * 20, "mid length text here " * 5]
    budget = M3EmbedderFactory(model=str(tiny_checkpoint), device="cpu", max_batch_tokens=64, threads=1)()
    plain = M3EmbedderFactory(model=str(tiny_checkpoint), device="cpu", threads=1)()
    assert budget.threads == 1
    a, b = budget.encode_documents(texts), plain.encode_documents(texts)
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
    assert [set(x) for x in a.sparse] == [set(x) for x in b.sparse]
