"""Reliability, round three (issue 27), the ingest items: the Ray engine's path guards (1), a recreated
collection under ``--resume`` (3), tenant-owner conflicts as bad rows (4), one winner for a repeated id
on both engines (6), JSONL records with duplicate keys (7).

Every test here failed on the code before the fix of its item. Rows lost in every case: 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec
from milvus_m3.errors import ConfigError
from milvus_m3.ingest import ingest
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.integration

DIM = 16


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def docs(n: int, prefix: str = "d", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "text": f"document {i} about topic {i % 7} word{i}", **extra} for i in range(n)
    ]


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def texts_of(m: CollectionManager, name: str, field: str = "text") -> dict[Any, Any]:
    rows = m.client.query(collection_name=name, filter="", output_fields=["id", field], limit=16_384)
    return {r["id"]: r[field] for r in rows}


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[CollectionManager]:
    m = CollectionManager(str(tmp_path / "rel3.db"))
    try:
        yield m
    finally:
        m.close()


_n = iter(range(10**6))


def make(m: CollectionManager, model: str = "fake/m3", dim: int = DIM, **kw: Any) -> str:
    name = f"r{next(_n)}"
    m.create_collection(name, spec=CollectionSpec(dense_dim=dim, model_name=model, **kw))
    return name


def run(m: CollectionManager, name: str, files: Sequence[Path], **kw: Any) -> Any:
    kw.setdefault("progress", False)
    return ingest(
        [str(f) for f in files], manager=m, collection=name, encoder=kw.pop("encoder", FakeEncoder(DIM)), **kw
    )


def ray_factory(tiny_checkpoint: Path) -> Any:
    from milvus_m3.ingest.ray_engine import M3EmbedderFactory

    return M3EmbedderFactory(model=str(tiny_checkpoint), device="cpu", precision="fp32", batch_size=16)


def two_actors(**kw: Any) -> Any:
    from milvus_m3.ingest.ray_engine import RayOptions

    return RayOptions(actors=2, cpus_per_actor=0.75, cpus_per_reader=0.25, **kw)


# ------------------------------------------------------------------ 7. JSONL records with duplicate keys


def test_jsonl_records_with_duplicate_keys_are_bad_rows(lite: CollectionManager, tmp_path: Path) -> None:
    """BAD_INPUT x3: a repeated key (top level, the id, nested in metadata) makes the record ambiguous:
    a bad row naming the key; before, the last value was stored silently."""
    name = make(lite)
    f = write_jsonl(
        tmp_path / "dupkeys.jsonl",
        [
            *docs(3),
            '{"id": "t", "text": "the first text", "text": "the second text"}',
            '{"id": "i1", "id": "i2", "text": "which id is it"}',
            '{"id": "m", "text": "nested", "meta": {"a": 1, "a": 2}}',
            *docs(2, "e"),
        ],
    )
    errors = tmp_path / "dupkeys.errors.jsonl"
    rep = run(lite, name, [f], errors_path=errors, metadata_fields=["meta"])
    assert (rep.read, rep.written, rep.failed) == (8, 5, 3)
    assert sorted(texts_of(lite, name)) == ["d0", "d1", "d2", "e0", "e1"]
    got = [(e["line"], e["field"]) for e in errors_of(errors)]
    assert got == [(4, "text"), (5, "id"), (6, "a")]
    assert all("appears twice" in e["error"] for e in errors_of(errors))


# ------------------------------------------------------------------ 3. a collection recreated by raw pymilvus


def recreate_with_copied_schema(m: CollectionManager, name: str) -> None:
    """Drop ``name`` and create it again with raw pymilvus, its schema (description included) and its
    indexes copied: everything milvus-m3 wrote into it survives, only the rows are gone."""
    from pymilvus import CollectionSchema

    client = m.client
    desc = client.describe_collection(name)
    schema = CollectionSchema.construct_from_dict(desc)
    index_params = client.prepare_index_params()
    for idx in client.list_indexes(name):
        info = dict(client.describe_index(name, idx))
        field = info.pop("field_name")
        info.pop("index_name", None)
        kind, metric = info.pop("index_type"), info.pop("metric_type", None)
        params = {
            k: v
            for k, v in info.items()
            if k not in ("total_rows", "indexed_rows", "pending_index_rows", "state", "dim")
        }
        index_params.add_index(
            field_name=field, index_name=idx, index_type=kind, metric_type=metric, params=params
        )
    client.drop_collection(name)
    client.create_collection(name, schema=schema, index_params=index_params)
    assert client.describe_collection(name)["description"] == desc["description"]


def test_resume_into_a_collection_recreated_with_its_schema_copied_starts_over(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: the build id lives in the description, which a copied schema copies: resume skipped all
    200 rows of a collection that held none of them (count 0, "skipped 200")."""
    name = make(lite)
    f = write_jsonl(tmp_path / "a.jsonl", docs(200))
    state = tmp_path / "a.state.json"
    first = run(lite, name, [f], state_path=state, batch_size=50)
    assert first.written == 200 and lite.count(name) == 200
    build_id = lite.build_id(name)
    recreate_with_copied_schema(lite, name)
    assert lite.build_id(name) == build_id and lite.count(name) == 0
    rep = run(lite, name, [f], state_path=state, resume=True, batch_size=50)
    assert (rep.skipped, rep.written) == (0, 200)
    assert lite.count(name) == 200
    # a resume into the same collection still skips what is settled
    again = run(lite, name, [f], state_path=state, resume=True, batch_size=50)
    assert (again.skipped, again.written, lite.count(name)) == (200, 0, 200)


def test_a_checkpoint_of_another_collection_instance_is_not_resumed(tmp_path: Path) -> None:
    """FAULT: on a Milvus server a recreated collection has another collection id (Milvus Lite gives 0
    for every collection, so there the row probe of the test above decides)."""
    from milvus_m3.ingest.checkpoint import Checkpoint

    state = tmp_path / "s.json"
    target = {"uri": "http://h:19530", "db_name": "default", "collection": "c", "build_id": "b1"}
    cp = Checkpoint(state, {"collection": "c"}, False, {**target, "collection_id": 11})
    cp.commit({"x.jsonl": 5}, {}, None)
    same = Checkpoint(state, {"collection": "c"}, True, {**target, "collection_id": 11})
    assert same.resumed and same.done("x.jsonl") == 5
    other = Checkpoint(state, {"collection": "c"}, True, {**target, "collection_id": 12})
    assert not other.resumed and other.done("x.jsonl") == 0


def test_cli_resume_into_a_recreated_collection_writes_every_row(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """FAULT, the issue's case through the CLI: ingest 200, drop and recreate by raw pymilvus with the
    schema copied, ``ingest --resume``: 200 stored, nothing skipped."""
    from tests.integration.test_cli import count_of, release
    from tests.integration.test_cli import run as cli

    write_jsonl(tmp_path / "a.jsonl", docs(200))
    argv = ["ingest", "a.jsonl", "--collection", "docs", "--uri", "x.db", "--model", str(tiny_checkpoint)]
    first = cli([*argv, "-q"], tmp_path)
    assert first.returncode == 0, first.stderr
    db = str(tmp_path / "x.db")
    with CollectionManager(db) as m:
        recreate_with_copied_schema(m, "docs")
    release(db)
    proc = cli([*argv, "--resume", "--json", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["skipped"], report["written"]) == (0, 200)
    assert count_of(db, "docs") == 200


# ------------------------------------------------------------------ 4. tenant-owner conflicts are bad rows


def tenant_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """a.jsonl: x1 for org A; b.jsonl: 400 rows for org B, row 150 with the id x1 (A's)."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "x1", "text": "org A owns x1", "org": "A"}])
    rows = docs(400, "b", org="B")
    rows[149] = {"id": "x1", "text": "org B tries to take x1", "org": "B"}
    return a, write_jsonl(tmp_path / "b.jsonl", rows)


def check_tenant_outcome(m: CollectionManager, name: str, report: Any, errors: Path, b: Path) -> None:
    assert (report.read, report.written, report.failed) == (400, 399, 1)
    (err,) = errors_of(errors)
    assert (Path(err["file"]).name, err["line"], err["id"], err["field"]) == (b.name, 150, "x1", "id")
    assert "another tenant" in err["error"]
    assert m.count(name) == 400  # A's x1 and B's 399
    orgs = texts_of(m, name, "org")
    assert orgs["x1"] == "A" and sum(v == "B" for v in orgs.values()) == 399


def test_a_tenant_owner_conflict_is_a_bad_row_not_the_end_of_the_job(
    lite: CollectionManager, tmp_path: Path
) -> None:
    """FAULT: one row whose id belongs to another tenant stopped the whole job (148 of 400 written)."""
    a, b = tenant_inputs(tmp_path)
    name = make(lite, partition_key="org")
    run(lite, name, [a], tenant_field="org")
    errors = tmp_path / "b.errors.jsonl"
    rep = run(lite, name, [b], tenant_field="org", errors_path=errors, batch_size=37)
    check_tenant_outcome(lite, name, rep, errors, b)
    # with on_error="fail" it is the first bad row: the job stops before writing its batch
    from milvus_m3.errors import IngestAborted

    other = write_jsonl(
        tmp_path / "c.jsonl", [*docs(5, "c", org="B"), {"id": "x1", "text": "again", "org": "B"}]
    )
    with pytest.raises(IngestAborted, match="another tenant"):
        run(lite, name, [other], tenant_field="org", on_error="fail", batch_size=100)
    assert texts_of(lite, name, "org")["x1"] == "A" and "c0" not in texts_of(lite, name)


def test_cli_tenant_owner_conflict_exits_0_with_the_bad_row(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """FAULT: ``ingest --tenant-field org`` (default --on-error skip) exited 2 after 148 of 400 rows."""
    from tests.integration.test_cli import count_of
    from tests.integration.test_cli import run as cli

    a, b = tenant_inputs(tmp_path)
    base = ["--collection", "docs", "--uri", "t.db", "--model", str(tiny_checkpoint), "--tenant-field", "org"]
    first = cli(["ingest", a.name, *base, "-q"], tmp_path)
    assert first.returncode == 0, first.stderr
    proc = cli(["ingest", b.name, *base, "--errors", "b.errors.jsonl", "--json", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["read"], report["written"], report["failed"]) == (400, 399, 1)
    (err,) = errors_of(tmp_path / "b.errors.jsonl")
    assert (err["line"], err["id"]) == (150, "x1")
    assert count_of(str(tmp_path / "t.db"), "docs") == 400


@pytest.mark.slow
def test_ray_tenant_owner_conflict_is_a_bad_row_lite_and_server(
    ray_local: Any,
    tiny_checkpoint: Path,
    tiny_embedder: Any,
    server_manager: CollectionManager,
    tmp_path: Path,
) -> None:
    """FAULT: the same conflict ended a Ray job, whether the driver writes (Lite) or the actors (a server)."""
    from milvus_m3.ingest.ray_engine import ray_ingest

    a, b = tenant_inputs(tmp_path)
    with CollectionManager(str(tmp_path / "ray-t.db")) as lm:
        for m, where in ((lm, "lite"), (server_manager, "server")):
            name = make(m, str(tiny_checkpoint), tiny_embedder.dense_dim, partition_key="org")
            run(m, name, [a], tenant_field="org", encoder=tiny_embedder)
            errors = tmp_path / f"{where}.errors.jsonl"
            rep = ray_ingest(
                [b],
                manager=m,
                collection=name,
                encoder=ray_factory(tiny_checkpoint),
                ray_options=two_actors(),
                errors_path=errors,
                tenant_field="org",
                batch_size=37,
            )
            check_tenant_outcome(m, name, rep, errors, b)


# ------------------------------------------------------------------ 6. one winner for a repeated id


def repeated_inputs(tmp_path: Path) -> list[Path]:
    """Two files holding the same 5 ids, other texts; the first file's record is the first of each id."""
    first = write_jsonl(
        tmp_path / "first.jsonl", [{"id": f"r{i}", "text": f"first version {i}"} for i in range(5)]
    )
    second = write_jsonl(
        tmp_path / "second.jsonl", [{"id": f"r{i}", "text": f"second version {i}"} for i in range(5)]
    )
    return [first, second]


@pytest.mark.slow
def test_ray_and_local_keep_the_same_winner_for_a_repeated_id_and_count_what_is_stored(
    ray_local: Any,
    tiny_checkpoint: Path,
    tiny_embedder: Any,
    server_manager: CollectionManager,
    tmp_path: Path,
) -> None:
    """WRONG_RESULT: Ray stored the second version and reported written 10 for 5 stored rows. Both engines
    keep the first record of an id in input order (files in the order given, then lines) and report
    the later ones as duplicates; written equals what is stored."""
    from milvus_m3.ingest.ray_engine import ray_ingest

    files = repeated_inputs(tmp_path)
    want = {f"r{i}": f"first version {i}" for i in range(5)}
    with CollectionManager(str(tmp_path / "local.db")) as lm:
        name = make(lm, str(tiny_checkpoint), tiny_embedder.dense_dim)
        local = run(
            lm, name, files, encoder=tiny_embedder, errors_path=tmp_path / "local.errors.jsonl", batch_size=2
        )
        assert texts_of(lm, name) == want
    assert (local.read, local.written, local.failed) == (10, 5, 5)
    local_errors = errors_of(tmp_path / "local.errors.jsonl")
    with CollectionManager(str(tmp_path / "ray.db")) as rm:
        for m, where in ((rm, "lite"), (server_manager, "server")):
            for batch_size in (1, 2, 10):
                name = make(m, str(tiny_checkpoint), tiny_embedder.dense_dim)
                errors = tmp_path / f"{where}{batch_size}.errors.jsonl"
                rep = ray_ingest(
                    files,
                    manager=m,
                    collection=name,
                    encoder=ray_factory(tiny_checkpoint),
                    ray_options=two_actors(),
                    errors_path=errors,
                    batch_size=batch_size,
                )
                assert texts_of(m, name) == want, (where, batch_size)
                assert (rep.read, rep.written, rep.chunks, rep.failed) == (10, 5, 5, 5), (where, batch_size)
                assert errors_of(errors) == local_errors, (where, batch_size)


# ------------------------------------------------------------------ 1. the Ray engine's path guards


@pytest.mark.slow
def test_ray_cli_refuses_paths_that_would_destroy_a_file(
    ray_local: Any, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """DATA_LOSS x4: ``--engine ray`` with --errors on the input, on the Lite database, on a user's file,
    and --state on the input (its derived errors path was the input): refused, every file intact."""
    from milvus_m3.cli import main

    monkeypatch.chdir(tmp_path)
    good = write_jsonl(tmp_path / "good.jsonl", docs(6))
    original = good.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("my own notes\n", encoding="utf-8")
    # inputs by absolute path: the session's Ray workers do not share this test's working directory
    base = ["ingest", str(good), "--collection", "docs", "--model", str(tiny_checkpoint), "-q"]
    ray_args = ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.75", "--device", "cpu"]
    assert main([*base, "--uri", "e2.db", *ray_args]) == 0
    capsys.readouterr()
    with CollectionManager("e2.db") as m:
        assert m.count("docs") == 6
    db_size = (tmp_path / "e2.db").stat().st_size
    for flags in (
        ["--errors", "good.jsonl"],
        ["--errors", "e2.db"],
        ["--state", "good.jsonl"],
        ["--errors", "notes.txt"],
    ):
        assert main([*base, "--uri", "e2.db", *ray_args, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert any(w in err for w in ("input", "database", "not a milvus-m3")), (flags, err)
        assert good.read_bytes() == original and notes.read_text(encoding="utf-8") == "my own notes\n"
        assert (tmp_path / "e2.db").stat().st_size >= db_size
    with CollectionManager("e2.db") as m:
        assert m.count("docs") == 6


@pytest.mark.slow
def test_two_ray_jobs_from_one_folder_keep_their_own_errors_files_and_locks(
    ray_local: Any,
    tiny_checkpoint: Path,
    milvus_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    """DATA_LOSS: two Ray jobs into one server collection from one folder shared
    ``./<collection>.ingest-errors.jsonl``: job B's start erased job A's bad-row report. The default
    paths now carry the inputs' hash, as the local engine's do, and a live job's errors file is locked."""
    from milvus_m3.cli import main
    from milvus_m3.ingest.guard import JobLock

    monkeypatch.chdir(tmp_path)
    a = str(write_jsonl(tmp_path / "a.jsonl", [*docs(4, "a"), {"id": "a-bad"}]))
    b = str(write_jsonl(tmp_path / "b.jsonl", [*docs(4, "b"), {"id": "b-bad"}]))
    coll = f"rayjobs{next(_n)}"
    base = ["--collection", coll, "--uri", milvus_server, "--model", str(tiny_checkpoint), "-q"]
    ray_args = ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.75", "--device", "cpu"]
    try:
        assert main(["ingest", a, *base, *ray_args]) == 0
        assert main(["ingest", b, *base, *ray_args]) == 0
        capsys.readouterr()
        reports = sorted(tmp_path.glob(f"{coll}.*.ingest-errors.jsonl"))
        assert len(reports) == 2, sorted(p.name for p in tmp_path.iterdir())
        assert sorted(e["id"] for p in reports for e in errors_of(p)) == ["a-bad", "b-bad"]
        # a job still running holds its errors file: the same job started again is refused
        a_report = next(p for p in reports if errors_of(p)[0]["id"] == "a-bad")
        held = JobLock()
        with held.holding(a_report):
            assert main(["ingest", a, *base, *ray_args]) == 2
        assert "another ingest job" in capsys.readouterr().err
        assert [e["id"] for e in errors_of(a_report)] == ["a-bad"]
    finally:
        with CollectionManager(milvus_server) as m:
            m.drop(coll, missing_ok=True)


@pytest.mark.slow
def test_ray_ingest_refuses_an_errors_path_on_an_input_or_the_database(
    ray_local: Any, tiny_checkpoint: Path, tiny_embedder: Any, lite: CollectionManager, tmp_path: Path
) -> None:
    """DATA_LOSS: ``ray_ingest(errors_path=<an input>)`` truncated the input to 0 bytes (and the Lite
    database, given as the errors path, lost its collection)."""
    from milvus_m3.ingest.ray_engine import ray_ingest

    name = make(lite, str(tiny_checkpoint), tiny_embedder.dense_dim)
    good = write_jsonl(tmp_path / "good.jsonl", docs(3))
    original = good.read_bytes()
    for path in (good, Path(lite.connection.uri)):
        with pytest.raises(ConfigError, match="input|database"):
            ray_ingest(
                [good], manager=lite, collection=name, encoder=ray_factory(tiny_checkpoint), errors_path=path
            )
        assert good.read_bytes() == original
    assert lite.count(name) == 0
    assert os.path.getsize(lite.connection.uri) > 0
