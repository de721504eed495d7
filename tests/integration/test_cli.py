"""The milvus-m3 command line, run as a real process (end to end, kill -9 and resume) and in-process.

Each process that loads the model pays the FlagEmbedding import (several seconds), so the end-to-end
tests use few processes: one ingest of every input kind at once, its re-run, one --on-error fail run,
and four runs for the kill -9 / --resume test.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.cli import main
from milvus_m3.collection.manager import CollectionManager

SCRIPT = Path(sys.executable).with_name("milvus-m3")
PROCESS_TIMEOUT = 240


def cli_cmd() -> list[str]:
    """The installed console script when there is one, else ``python -m milvus_m3``."""
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "milvus_m3"]


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("MILVUS_URI", "MILVUS_TOKEN", "MILVUS_M3_MODEL"):
        env.pop(key, None)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run(
    args: Sequence[str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*(prefix or cli_cmd()), *args],
        check=False,
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=env or env_for(cwd),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return proc


def release(uri: str) -> None:
    """Stop this process's Milvus Lite server for ``uri``: pymilvus keeps it (and the file's lock) until
    the process exits, and the next CLI process must open the file."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(uri)


def rows_of(uri: str, name: str) -> dict[str, dict[str, Any]]:
    with CollectionManager(uri) as m:
        res = m.client.query(collection_name=name, filter="", output_fields=["*"], limit=16_384)
    release(uri)
    out: dict[str, dict[str, Any]] = {}
    for r in res:
        r = dict(r)
        r["dense"] = [round(float(x), 5) for x in r["dense"]]
        r["sparse"] = sorted((int(k), round(float(v), 5)) for k, v in dict(r["sparse"]).items())
        out[r["id"]] = r
    return out


def count_of(uri: str, name: str) -> int:
    with CollectionManager(uri) as m:
        n = m.count(name)
    release(uri)
    return n


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


# -------------------------------------------------------------------------- light commands: no torch


def test_help_runs_without_importing_torch(tmp_path: Path) -> None:
    proc = run(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for cmd in ("create", "ingest", "search", "info", "drop"):
        assert cmd in proc.stdout
    proc = run(["ingest", "--help"], tmp_path)
    assert proc.returncode == 0 and "--chunk-tokens" in proc.stdout and "--on-error" in proc.stdout
    proc = run(["--help"], tmp_path, prefix=[sys.executable, "-X", "importtime", "-m", "milvus_m3"])
    assert proc.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "pymilvus" not in imported and "FlagEmbedding" not in imported


@pytest.mark.integration
def test_create_info_drop_do_not_import_torch(tmp_path: Path, tiny_checkpoint: Path) -> None:
    db = str(tmp_path / "light.db")
    script = f"""
import sys
from milvus_m3.cli import main
codes = [
    main(["create", "--collection", "docs", "--uri", {db!r}, "--model", {str(tiny_checkpoint)!r}, "--chunked"]),
    main(["info", "--collection", "docs", "--uri", {db!r}, "--json"]),
    main(["info", "--uri", {db!r}]),
    main(["drop", "--collection", "docs", "--uri", {db!r}]),
]
heavy = sorted(m for m in ("torch", "FlagEmbedding", "transformers") if m in sys.modules)
print("RESULT", codes, heavy)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=env_for(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert "RESULT [0, 0, 0, 2] []" in proc.stdout, proc.stdout + proc.stderr
    info = json.loads(proc.stdout.splitlines()[1])
    assert info["name"] == "docs" and info["count"] == 0 and info["dense_dim"] == 32
    assert info["model"] == str(tiny_checkpoint) and info["spec"]["chunked"] is True
    assert "parent_id" in info["fields"]
    assert "refusing to drop" in proc.stderr and "--yes" in proc.stderr and "Traceback" not in proc.stderr
    # the real process, timed import by import
    proc = run(
        ["info", "--collection", "docs", "--uri", db],
        tmp_path,
        prefix=[sys.executable, "-X", "importtime", "-m", "milvus_m3"],
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "pymilvus" in imported and "torch" not in imported
    proc = run(["drop", "--collection", "docs", "--uri", db, "--yes"], tmp_path)
    assert proc.returncode == 0 and "dropped" in proc.stdout
    proc = run(["info", "--collection", "docs", "--uri", db], tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------- end to end ingest


def _inputs(tmp: Path) -> tuple[list[str], bytes, set[str], dict[str, str]]:
    """Files of every kind, stdin bytes, the ids expected in the collection and some expected texts."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    write_jsonl(
        tmp / "a.jsonl", [{"id": f"j{i}", "text": f"jsonl document {i}", "lang": "en"} for i in range(6)]
    )
    (tmp / "b.csv").write_text(
        "id,text,lang\n" + "".join(f'c{i},"csv document, number {i}",de\n' for i in range(5)),
        encoding="utf-8",
    )
    (tmp / "c.tsv").write_text(
        "id\ttext\n" + "".join(f"t{i}\ttsv document {i}\n" for i in range(4)), encoding="utf-8"
    )
    pq.write_table(
        pa.table(
            {
                "id": [f"p{i}" for i in range(5)],
                "text": [f"parquet document {i}" for i in range(5)],
                "lang": ["fr"] * 5,
            }
        ),
        tmp / "d.parquet",
    )
    write_jsonl(
        tmp / "corpus.jsonl",
        [{"_id": f"b{i}", "title": f"Title {i}", "text": f"beir body {i}"} for i in range(4)],
    )
    (tmp / "e.jsonl.gz").write_bytes(
        gzip.compress(
            "".join(
                json.dumps({"id": f"g{i}", "text": f"gzip document {i}"}) + "\n" for i in range(5)
            ).encode()
        )
    )
    bad = tmp / "bad.jsonl"
    bad.write_bytes(
        b'{"id": "ok", "text": "the good neighbour"}\n'
        b'{"id": "ok", "text": "duplicate in the same batch"}\n'
        b"{broken\n"
        b'{"id": "e1", "text": ""}\n'
        b'{"id": "e2"}\n'
        b'{"id": "e3", "text": "bad \xff bytes"}\n'
    )
    stdin = "".join(json.dumps({"text": f"stdin document {i}"}) + "\n" for i in range(3)).encode()
    from milvus_m3.ingest import content_id

    ids = (
        {f"j{i}" for i in range(6)}
        | {f"c{i}" for i in range(5)}
        | {f"t{i}" for i in range(4)}
        | {f"p{i}" for i in range(5)}
        | {f"b{i}" for i in range(4)}
        | {f"g{i}" for i in range(5)}
        | {"ok"}
        | {str(content_id(f"stdin document {i}")) for i in range(3)}
    )
    texts = {
        "c1": "csv document, number 1",
        "b2": "Title 2 beir body 2",
        "g4": "gzip document 4",
        "p0": "parquet document 0",
        "ok": "the good neighbour",
    }
    files = ["a.jsonl", "b.csv", "c.tsv", "d.parquet", "corpus.jsonl", "e.jsonl.gz", "bad.jsonl", "-"]
    return files, stdin, ids, texts


@pytest.mark.integration
def test_ingest_every_format_then_rerun_is_identical(tmp_path: Path, tiny_checkpoint: Path) -> None:
    files, stdin, ids, texts = _inputs(tmp_path)
    db = str(tmp_path / "e2e.db")
    args = [
        "ingest",
        *files,
        "--collection",
        "docs",
        "--model",
        str(tiny_checkpoint),
        "--metadata-fields",
        "lang",
        "--batch-size",
        "4",
        "--json",
    ]
    env = env_for(tmp_path, MILVUS_URI=db)
    first = run(args, tmp_path, stdin=stdin, env=env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["read"], summary["written"], summary["failed"]) == (38, 33, 5)
    errors_path = tmp_path / "e2e.docs.ingest-errors.jsonl"
    assert summary["errors_path"] == str(errors_path)
    errors = [json.loads(line) for line in errors_path.read_text().splitlines()]
    assert [(e["file"], e["line"]) for e in errors] == [("bad.jsonl", n) for n in (2, 3, 4, 5, 6)]
    assert [e["field"] for e in errors] == ["id", None, "text", "text", None]
    assert "invalid UTF-8" in errors[4]["error"]
    assert "created collection 'docs'" in first.stderr and "Traceback" not in first.stderr
    rows = rows_of(db, "docs")
    assert set(rows) == ids
    for key, text in texts.items():
        assert rows[key]["text"] == text
    assert rows["j0"]["metadata"] == {"lang": "en"} and rows["p1"]["metadata"] == {"lang": "fr"}
    assert rows["b1"]["metadata"] == {"title": "Title 1"}

    again = run(args, tmp_path, stdin=stdin, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["written"] == 33
    assert rows_of(db, "docs") == rows  # same count, same rows, same vectors
    assert len(errors_path.read_text().splitlines()) == 5  # a fresh run rewrites the errors file

    # the human summary; --resume with no checkpoint yet starts from the beginning
    proc = run(
        [
            "ingest",
            *files[:-1],
            "--collection",
            "docs",
            "--model",
            str(tiny_checkpoint),
            "--resume",
            "--metadata-fields",
            "lang",
            "--batch-size",
            "4",
            "--state",
            str(tmp_path / "s.json"),
        ],
        tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "read 35, written 30" in proc.stdout and "bad rows (5" in proc.stdout and "bad.jsonl:2" in proc.stdout
    )


@pytest.mark.integration
def test_on_error_fail_exits_non_zero_before_the_bad_batch(tmp_path: Path, tiny_checkpoint: Path) -> None:
    rows: list[Any] = [{"id": f"d{i}", "text": f"document number {i}"} for i in range(30)]
    rows[22] = '{"id": "d22", "text": 5}'
    write_jsonl(tmp_path / "a.jsonl", rows)
    db = str(tmp_path / "fail.db")
    proc = run(
        [
            "ingest",
            "a.jsonl",
            "--collection",
            "docs",
            "--uri",
            db,
            "--model",
            str(tiny_checkpoint),
            "--batch-size",
            "10",
            "--on-error",
            "fail",
            "-q",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "a.jsonl:23" in proc.stderr and "must be a string" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert "written 20" in proc.stdout
    assert set(rows_of(db, "docs")) == {f"d{i}" for i in range(20)}


# ------------------------------------------------------------------------------ kill -9 and --resume


def _state_done(path: Path) -> tuple[int, bool]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0, False
    return sum(int(v.get("done", 0)) for v in data["inputs"].values()), bool(data.get("finished"))


def _kill_when(proc: subprocess.Popen[str], state: Path, at_least: int | None, after_s: float | None) -> int:
    """kill -9 once the checkpoint covers ``at_least`` records, or after ``after_s`` seconds; returns
    the records covered by the checkpoint at the kill (-1 when the process had already finished)."""
    start = time.monotonic()
    while proc.poll() is None:
        done, _ = _state_done(state)
        if (at_least is not None and done >= at_least) or (
            after_s is not None and time.monotonic() - start >= after_s
        ):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return _state_done(state)[0]
        if time.monotonic() - start > PROCESS_TIMEOUT:
            proc.kill()
            raise AssertionError("ingest did not reach the kill point in time")
        time.sleep(0.002)
    return -1


@pytest.mark.integration
def test_kill_9_at_several_points_then_resume_stores_exactly_the_input(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    n = 300
    rows = [{"id": f"k{i}", "text": f"kill test document {i} on topic {i % 11}"} for i in range(n)]
    write_jsonl(tmp_path / "k.jsonl", rows)
    db = str(tmp_path / "kill.db")
    state = tmp_path / "kill.docs.ingest-state.json"
    args = [
        "ingest",
        "k.jsonl",
        "--collection",
        "docs",
        "--uri",
        db,
        "--model",
        str(tiny_checkpoint),
        "--batch-size",
        "6",
        "--quiet",
        "--json",
    ]
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    plan: list[tuple[int | None, float | None]] = [(30, None), (150, None), (None, rng.uniform(1.0, 12.0))]
    killed_mid_job = []
    for i, (at_least, after_s) in enumerate(plan):
        proc = subprocess.Popen(
            [*cli_cmd(), *args, *(["--resume"] if i else [])],
            cwd=tmp_path,
            env=env_for(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            done = _kill_when(proc, state, at_least, after_s)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        killed_mid_job.append(done != -1 and not _state_done(state)[1])
        if i == 0:
            assert killed_mid_job[0], f"the first run finished before the kill (seed {seed})"
            # what the checkpoint covers is really stored (Milvus Lite kept every acknowledged upsert)
            acked = set(rows_of(db, "docs"))
            assert {f"k{j}" for j in range(done)} <= acked, f"seed {seed}"
    final = subprocess.run(
        [*cli_cmd(), *args, "--resume"],
        check=False,
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= 150 and summary["failed"] == 0, (summary, seed)
    assert summary["skipped"] + summary["read"] == n
    stored = rows_of(db, "docs")
    assert len(stored) == n and count_of(db, "docs") == n, f"seed {seed}"
    assert set(stored) == {r["id"] for r in rows}
    assert all(stored[r["id"]]["text"] == r["text"] for r in rows)


# ----------------------------------------------------------------------- in-process: search, drop, errors


@pytest.fixture
def chunked_db(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[str]:
    long = [
        {"id": f"doc{i}", "text": " ".join(f"topic{i} word{j} shared" for j in range(40))} for i in range(4)
    ]
    write_jsonl(tmp_path / "long.jsonl", long)
    db = str(tmp_path / "chunks.db")
    code = main(
        [
            "ingest",
            str(tmp_path / "long.jsonl"),
            "--collection",
            "chunks",
            "--uri",
            db,
            "--model",
            str(tiny_checkpoint),
            "--chunk-tokens",
            "24",
            "--chunk-overlap",
            "4",
            "-q",
        ]
    )
    assert code == 0
    yield db


@pytest.mark.integration
def test_chunked_ingest_and_search_one_hit_per_parent(
    chunked_db: str, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("milvus_m3.search")
    capsys.readouterr()
    rows = rows_of(chunked_db, "chunks")
    parents = {r["parent_id"] for r in rows.values()}
    assert parents == {f"doc{i}" for i in range(4)} and len(rows) > 3 * len(parents)
    base = [
        "search",
        "topic2 word3 shared",
        "--collection",
        "chunks",
        "--uri",
        chunked_db,
        "--model",
        str(tiny_checkpoint),
        "--limit",
        "10",
    ]
    assert main([*base, "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 10 and {"id", "score", "text", "metadata"} <= set(hits[0])
    assert main([*base, "--json", "--group-by", "parent_id"]) == 0
    grouped = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(grouped) == 4
    assert len({h["id"].split("#")[0] for h in grouped}) == 4
    assert main([*base, "--mode", "sparse", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].lstrip().startswith("1.")


@pytest.mark.integration
def test_drop_asks_on_a_terminal(
    chunked_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["drop", "--collection", "chunks", "--uri", chunked_db]) == 1
    assert count_of(chunked_db, "chunks") > 0
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["drop", "--collection", "chunks", "--uri", chunked_db]) == 0
    with CollectionManager(chunked_db) as m:
        assert not m.has_collection("chunks")


def test_errors_are_one_line_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from milvus_m3.collection import manager as collection
    from milvus_m3.errors import MilvusUnavailableError

    secret = "root:s3cr3t-t0ken-value"

    class Unreachable:
        def __init__(self, uri: str, *, token: str | None = None, **kw: Any) -> None:
            raise MilvusUnavailableError(f"Milvus at {uri} did not answer (token {token} rejected)")

    monkeypatch.setattr(collection, "CollectionManager", Unreachable)
    monkeypatch.setenv("MILVUS_TOKEN", secret)
    assert main(["info", "--uri", "http://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("milvus-m3: error: Milvus at http://127.0.0.1:1") and "Traceback" not in err
    assert secret not in err and "s3cr3t-t0ken-value" not in err
    # usage and input errors exit 2
    assert (
        main(
            ["ingest", str(tmp_path / "missing.jsonl"), "--collection", "x", "--uri", str(tmp_path / "x.db")]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "data.bin").write_text("id,text\n")
    assert (
        main(["ingest", str(tmp_path / "data.bin"), "--collection", "x", "--uri", str(tmp_path / "x.db")])
        == 2
    )
    assert "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ingest", "--collection", "x"])
    assert exc.value.code == 2


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from milvus_m3.cli import build_parser

    monkeypatch.setenv("MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("MILVUS_TOKEN", "tok")
    monkeypatch.setenv("MILVUS_M3_MODEL", "/models/bge-m3")
    args = build_parser().parse_args(["search", "q", "--collection", "c"])
    assert (args.uri, args.token, args.model) == ("http://milvus:19530", "tok", "/models/bge-m3")
    monkeypatch.delenv("MILVUS_URI")
    monkeypatch.delenv("MILVUS_M3_MODEL")
    args = build_parser().parse_args(["search", "q", "--collection", "c", "--uri", "./x.db"])
    assert (args.uri, args.model) == ("./x.db", "BAAI/bge-m3")
    assert build_parser().parse_args(["info"]).uri == "./milvus_m3.db"
