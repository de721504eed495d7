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


# ------------------------------------------- 13. Ray's errors, a killed or terminated Ray driver

REPO = Path(__file__).resolve().parents[2]
SETTLE_S = 30.0
"""Bounded waits of the signal tests (Ray starts slowly on a loaded machine)."""


def ray_cli(args: Sequence[str], cwd: Path) -> list[str]:
    """``python -m milvus_m3`` of this checkout with ``--engine ray`` on a local Ray the CLI starts itself
    (``--ray-address local``: never a Ray instance of the test session)."""
    import sys

    ray_args = ["--engine", "ray", "--ray-address", "local", "--actors", "1", "--cpus-per-actor", "0.75"]
    return [sys.executable, "-m", "milvus_m3", *args, *ray_args, "--device", "cpu", "-q"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MILVUS_URI", "RAY_ADDRESS", "MILVUS_M3_MODEL")}
    env.update(
        PYTHONPATH=str(REPO),  # the Ray workers the CLI starts import this checkout too
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def descendants_of(pid: int) -> dict[int, str]:
    """pid -> name of every descendant of ``pid`` (psutil; else /proc through the reaper's walk)."""
    try:
        import psutil
    except ImportError:
        from milvus_m3.ingest._ray_reaper import descendants

        found = descendants({(pid, int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]))})
        return {p: Path(f"/proc/{p}/comm").read_text().strip() for p, _ in found if p != pid}
    try:
        return {c.pid: c.name() for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def running(pids: dict[int, str], since: float) -> dict[int, str]:
    """Those of ``pids`` still running (not zombies), started before ``since`` (never a reused pid)."""
    try:
        import psutil
    except ImportError:
        return {p: n for p, n in pids.items() if Path(f"/proc/{p}").exists()}
    alive = {}
    for p, n in pids.items():
        try:
            proc = psutil.Process(p)
            if proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= since:
                alive[p] = n
        except psutil.Error:
            pass
    return alive


def wait_for_ray_workers(proc: Any, deadline_s: float) -> dict[int, str]:
    """The driver's descendants once a Ray worker (``ray::...``) is among them."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None:
        kids = descendants_of(proc.pid)
        if any(n.startswith("ray::") and "IDLE" not in n for n in kids.values()):
            time.sleep(2)  # a batch or two under way
            return descendants_of(proc.pid)
        time.sleep(0.5)
    out = proc.communicate()[1] if proc.poll() is not None else ""
    pytest.fail(f"no Ray worker within {deadline_s} s (driver exit {proc.poll()}): {out[-2000:]}")


def reap(pids: dict[int, str]) -> None:
    """Kill what a test's driver left (by pid, only the processes it started)."""
    import signal

    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def slow_job(tmp_path: Path, tiny_checkpoint: Path, n: int = 400) -> list[str]:
    src = write_jsonl(tmp_path / "docs.jsonl", docs(n))
    args = ["ingest", str(src), "--collection", "docs", "--uri", str(tmp_path / "sig.db")]
    return ray_cli([*args, "--model", str(tiny_checkpoint), "--batch-size", "2"], tmp_path)


@pytest.mark.slow
def test_a_ray_worker_error_reaches_the_cli_as_one_milvus_m3_line(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """UNCLEAR_ERROR: an error in a Ray worker reached the user as ``RayTaskError(UserCodeException)`` with
    ANSI colours and the remote traceback. Now it is milvus-m3's own error, the local engine's line."""
    import gzip
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl.gz"  # the read step (a Ray task) meets a corrupt gzip stream
    bad.write_bytes(gzip.compress(b'{"id": "a", "text": "x"}\n' * 50)[:40] + b"garbage" * 20)
    args = ["ingest", str(bad), "--collection", "docs", "--model", str(tiny_checkpoint)]
    local = subprocess.run(
        [sys.executable, "-m", "milvus_m3", *args, "--uri", str(tmp_path / "l.db"), "-q"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == 2 and "gzip stream is corrupt" in local.stderr, local.stderr
    proc = subprocess.run(
        ray_cli([*args, "--uri", str(tmp_path / "r.db")], tmp_path),
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == 2, err
    ours = [line for line in err.splitlines() if line.startswith("milvus-m3:")]
    assert ours == [local.stderr.strip()], err  # one line, the local engine's
    for word in ("\x1b[", "Traceback", "RayTaskError", "UserCodeException", "Failed to apply UDF"):
        assert word not in err, (word, err)


class FailingEncoder:
    """An encoder factory whose encoder raises ``error`` when it embeds (in the actors, not the probe)."""

    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error = inner, error

    def __call__(self) -> Any:
        return _Failing(self.inner(), self.error)


class _Failing:
    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error = inner, error
        self.dense_dim, self.model_name = inner.dense_dim, inner.model_name
        self.model_fingerprint = inner.model_fingerprint
        self.document_max_length = inner.document_max_length

    def encode_documents(self, texts: Sequence[str]) -> Any:
        raise self.error

    def encode_queries(self, texts: Sequence[str]) -> Any:
        raise self.error


@pytest.mark.slow
def test_an_actor_error_is_milvus_m3_s_own_error_without_ansi_or_remote_traceback(
    ray_local: Any, tiny_checkpoint: Path, tiny_embedder: Any, lite: CollectionManager, tmp_path: Path
) -> None:
    """UNCLEAR_ERROR: ``ray_ingest`` raised ``RayTaskError(UserCodeException)`` (ANSI codes, the remote
    traceback, the original error lost) for an error in an embedding actor."""
    from milvus_m3.errors import MilvusM3Error
    from milvus_m3.ingest.ray_engine import ray_ingest

    name = make(lite, str(tiny_checkpoint), tiny_embedder.dense_dim)
    src = write_jsonl(tmp_path / "docs.jsonl", docs(4))
    for error, kind, words in (
        (ConfigError("my own message; the fix"), ConfigError, "my own message; the fix"),
        (RuntimeError("boom \x1b[31mred\x1b[0m\n  more"), MilvusM3Error, "RuntimeError: boom red more"),
    ):
        with pytest.raises(MilvusM3Error) as got:
            ray_ingest(
                [src],
                manager=lite,
                collection=name,
                encoder=FailingEncoder(ray_factory(tiny_checkpoint), error),
                ray_options=two_actors(),
                progress=False,
            )
        text = str(got.value)
        assert type(got.value) is kind and words in text, repr(text)
        assert "\x1b" not in text and "Traceback" not in text and "\n" not in text, repr(text)
        assert "Ray" not in type(got.value).__name__
    assert lite.count(name) == 0


def test_sigterm_of_a_local_ingest_is_a_clean_named_exit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """SIGTERM stops a command as Ctrl-C does (the ingest job keeps what it wrote and its state) and exits
    143 with one line. (With --engine ray, some runs still end in SIGABRT from Ray's own handler: not
    fixed, see the closing note of issue 27.)"""
    import signal
    import subprocess
    import sys
    import time

    db = str(tmp_path / "term.db")
    base = [
        sys.executable,
        "-m",
        "milvus_m3",
        "ingest",
        "-",
        "--uri",
        db,
        "--collection",
        "docs",
        "--model",
        str(tiny_checkpoint),
    ]
    proc = subprocess.Popen(
        [
            *base,
            "--state",
            str(tmp_path / "term.state.json"),
            "--errors",
            str(tmp_path / "term.errors.jsonl"),
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(
            "".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(3))
        )
        proc.stdin.flush()
        end = time.monotonic() + 240
        lock = tmp_path / ".term.errors.jsonl.lock"  # the job holds it while it runs
        while not lock.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)  # stdin stays open: the job waits for more records
        assert lock.exists(), proc.communicate(timeout=30)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, (proc.returncode, err[-2000:])
        assert err.strip().splitlines()[-1].startswith("milvus-m3: terminated (SIGTERM)"), err[-2000:]
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_a_sigkilled_ray_driver_leaves_no_ray_process_behind(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """LEAK: after SIGKILL of an ``ingest --engine ray`` driver, Ray processes it had started (its agents)
    were still running 30 s later. Now every process the driver started is gone within SETTLE_S.
    (Timing-dependent on a loaded machine: the bound is generous; Ray's agents alone took over 30 s.)"""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        slow_job(tmp_path, tiny_checkpoint),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kids: dict[int, str] = {}
    try:
        kids = wait_for_ray_workers(proc, 240)
        assert any("raylet" in n or "gcs" in n for n in kids.values()), kids  # a Ray the driver started
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed = time.time()
        end = time.monotonic() + SETTLE_S
        while running(kids, killed) and time.monotonic() < end:
            time.sleep(0.5)
        assert not running(kids, killed), running(kids, killed)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        reap(running(kids, time.time()))


# ------------------------------------------------------- B. a Ray-created collection's model fingerprint


@pytest.mark.slow
def test_a_collection_created_by_ray_ingest_refuses_another_checkpoint_of_the_same_folder_name(
    ray_local: Any, tiny_checkpoint: Path, tmp_path: Path, capsys: Any
) -> None:
    """WRONG_RESULT: ``ingest --engine ray`` created collections with the model's path and no
    fingerprint, so checkpoint B in a folder of the same name as A's was accepted (rows of two vector
    spaces in one collection). Now the fingerprint is recorded at create, as the local engine records
    it, and B is refused by both engines with 0 rows added."""
    from milvus_m3.cli import main
    from milvus_m3.embedder.checkpoint import model_fingerprint
    from tests.integration.test_model_registry import build_models

    models = build_models(tiny_checkpoint, tmp_path / "models")
    a_dir, _, b_dir = models.dirs
    db = str(tmp_path / "fp.db")
    ray_args = ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "0.75", "--device", "cpu"]

    def ingest_with(model: Path, prefix: str, *engine: str) -> int:
        src = write_jsonl(tmp_path / f"{prefix}.jsonl", docs(5, prefix))  # absolute paths: Ray's workers
        return main(
            ["ingest", str(src), "--collection", "docs", "--uri", db, "--model", str(model), "-q", *engine]
        )

    assert ingest_with(a_dir, "a", *ray_args) == 0
    capsys.readouterr()
    with CollectionManager(db) as m:
        spec = m.spec("docs")
        assert spec.model_fingerprint == model_fingerprint(a_dir), spec
        assert m.count("docs") == 5
    for prefix, engine in (("b", ray_args), ("c", [])):
        code = ingest_with(b_dir, prefix, *engine)
        err = capsys.readouterr().err
        assert code == 1 and "another model" in err, (engine, code, err)  # SchemaMismatchError: exit 1
        assert model_fingerprint(b_dir)[:12] in err, err
        with CollectionManager(db) as m:
            assert m.count("docs") == 5, engine
