"""A newcomer's first hour with the CLI, on Milvus Lite and the tiny checkpoint: what is left behind
(nothing a read-only or failed command did not find), the exit code for rejected rows, the hints that
name flags, an unreachable server in one line, eval's progress, the ingest bar's total, and no noise
from milvus-lite or a doubled overflow report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from milvus_m3.cli import main
from milvus_m3.collection.manager import CollectionManager
from tests.integration.test_cli import count_of, env_for, release, run, write_jsonl
from tests.integration.test_evaluate import write_beir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample.jsonl"
BAD_FIRST = [{"id": "a", "text": "fine"}, {"id": "b"}]


def _collections(uri: str) -> list[str]:
    with CollectionManager(uri) as m:
        names = m.list_collections()
    release(uri)
    return names


# ------------------------------------------------------------------------------------ leftovers


def test_read_only_commands_never_create_a_lite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.db"
    for argv in (
        ["info", "--uri", str(typo)],
        ["info", "--uri", str(typo), "--collection", "docs"],
        ["search", "q", "--collection", "docs", "--uri", str(typo)],
        ["drop", "--collection", "docs", "--uri", str(typo), "--yes"],
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "no Milvus Lite file" in err and "--uri" in err, err
        assert not typo.exists() and list(tmp_path.iterdir()) == [], argv


def test_failed_ingest_and_create_leave_what_was_there(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", BAD_FIRST)
    model = ["--model", str(tiny_checkpoint), "-q"]
    # a new Lite file: a bad row with --on-error fail, a model that does not load, a bad collection name
    new = tmp_path / "new.db"
    assert (
        main(["ingest", str(bad), "--collection", "c", "--uri", str(new), "--on-error", "fail", *model]) == 2
    )
    assert not new.exists()
    assert (
        main(["ingest", str(bad), "--collection", "c", "--uri", str(new), "--model", str(tmp_path / "nope")])
        != 0
    )
    assert not new.exists()
    assert main(["create", "--collection", "bad name!", "--uri", str(new), "--dense-dim", "32"]) == 2
    assert not new.exists()
    assert "--exists-ok" not in capsys.readouterr().err
    # an existing file: its collection stays as it was, no empty new collection, no state file of it
    db = str(tmp_path / "kept.db")
    assert main(["ingest", str(SAMPLE), "--collection", "keep", "--uri", db, *model]) == 0
    assert main(["ingest", str(bad), "--collection", "fresh", "--uri", db, "--on-error", "fail", *model]) == 2
    assert _collections(db) == ["keep"] and count_of(db, "keep") == 24
    assert not (tmp_path / "kept.fresh.ingest-state.json").exists()
    capsys.readouterr()
    # the library's parameter names come out as flags
    assert main(["create", "--collection", "keep", "--uri", db, "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "--exists-ok" in err and "--recreate" in err and "exists_ok" not in err, err


def test_drop_removes_the_collections_ingest_state(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "d.db")
    assert (
        main(
            [
                "ingest",
                str(SAMPLE),
                "--collection",
                "demo",
                "--uri",
                db,
                "--model",
                str(tiny_checkpoint),
                "-q",
            ]
        )
        == 0
    )
    state = tmp_path / "d.demo.ingest-state.json"
    unrelated = tmp_path / "d.other.ingest-state.json"
    unrelated.write_text('{"version": 1, "options": {"collection": "other"}, "inputs": {}}')
    assert state.is_file()
    assert main(["drop", "--collection", "demo", "--uri", db, "--yes"]) == 0
    assert not state.exists() and unrelated.exists()
    assert "removed its ingest state file" in capsys.readouterr().err


def test_strict_exit_reports_rejected_rows(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", BAD_FIRST)
    base = [
        "ingest",
        str(bad),
        "--uri",
        str(tmp_path / "x.db"),
        "--model",
        str(tiny_checkpoint),
        "-q",
        "--json",
    ]
    assert main([*base, "--collection", "lenient"]) == 0
    assert main([*base, "--collection", "strict", "--strict-exit"]) == 3
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(s["written"], s["failed"]) for s in summaries] == [(1, 1), (1, 1)]
    clean = write_jsonl(tmp_path / "ok.jsonl", [{"id": "z", "text": "all good"}])
    assert main(["ingest", str(clean), *base[2:], "--collection", "strict", "--strict-exit"]) == 0


# ------------------------------------------------------------------------------- search hints


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> str:
    db = str(tmp_path_factory.mktemp("demo") / "demo.db")
    argv = ["ingest", str(SAMPLE), "--collection", "demo", "--uri", db, "--model", str(tiny_checkpoint)]
    assert main([*argv, "--metadata-fields", "lang,topic", "-q"]) == 0
    return db


def test_group_by_on_an_unchunked_collection_says_why(
    demo_db: str, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "q", "--collection", "demo", "--uri", demo_db, "--model", str(tiny_checkpoint)]
    assert main([*argv, "--group-by", "parent_id"]) == 2
    err = capsys.readouterr().err
    assert "not chunked" in err and "without --group-by" in err and "--chunk-tokens" in err
    assert "['text']" not in err


def test_a_metadata_key_filter_shows_how_to_write_it(
    demo_db: str, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "cells", "--collection", "demo", "--uri", demo_db, "--model", str(tiny_checkpoint)]
    assert main([*argv, "--filter", 'topic == "biology"']) == 1
    err = capsys.readouterr().err
    assert '--filter \'metadata["topic"] == "biology"\'' in err, err
    assert "Traceback" not in err and "_log_rpc_error" not in err
    assert main([*argv, "--filter", 'metadata["topic"] == "biology"', "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 4 and {h["metadata"]["topic"] for h in hits} == {"biology"}


# ------------------------------------------------------------------------------- server options


def test_an_unreachable_server_is_one_warning_and_one_error_naming_the_flags(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run(["info", "--uri", f"http://127.0.0.1:{port}", "--retries", "3", "--timeout", "2"], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert "WARNING" in lines[0] and "try 1/4" in lines[0] and "-v shows each retry" in lines[0]
    assert lines[1].startswith("milvus-m3: error: Milvus at") and "after 4 tries" in lines[1]
    for flag in ("--uri", "--retries", "--timeout", "--secure", "--token"):
        assert flag in lines[1], flag
    assert "RetryPolicy" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- progress


def test_eval_shows_progress_unless_quiet(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_beir(tmp_path / "tiny", n_docs=30, n_queries=6)
    base = ["eval", str(data), "--model", str(tiny_checkpoint), "--modes", "dense,sparse,rrf", "--no-bm25"]
    base += ["--no-plot", "--no-cache"]
    assert main([*base, "--uri", str(tmp_path / "e.db"), "--out", str(tmp_path / "o1")]) == 0
    err = capsys.readouterr().err
    for needle in (
        "milvus-m3 eval: loading",
        "30 documents, 3 queries",
        "Encoding",
        "INFO: dense:",
        "INFO: rrf:",
    ):
        assert needle in err, (needle, err[-2000:])
    assert main([*base, "-q", "--uri", str(tmp_path / "e2.db"), "--out", str(tmp_path / "o2")]) == 0
    err = capsys.readouterr().err
    assert "milvus-m3 eval:" not in err and "Encoding" not in err and "INFO" not in err, err
    assert err.strip().startswith("wrote ")


def test_the_ingest_bar_has_a_total(
    tmp_path: Path, manager: CollectionManager, fake_encoder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from milvus_m3.ingest import ingest
    from milvus_m3.types import Encoder

    assert isinstance(fake_encoder, Encoder)
    manager.create_collection("bar", dense_dim=fake_encoder.dense_dim, model_name=fake_encoder.model_name)
    report = ingest(
        [str(SAMPLE)], manager=manager, collection="bar", encoder=fake_encoder, progress=True, batch_size=5
    )
    assert report.written == 24
    err = capsys.readouterr().err
    assert "24/24" in err and "<00:00" in err, err  # a total, hence a percentage and an ETA


# ------------------------------------------------------------------------------------------ noise


def test_no_pkg_resources_warning_from_the_python_api(tmp_path: Path) -> None:
    code = "from milvus_m3 import CollectionManager\nwith CollectionManager('./x.db') as m:\n    m.list_collections()\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pkg_resources" not in proc.stderr, proc.stderr


def test_overflow_is_reported_once(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import logging

    from milvus_m3.embedder.model import M3Embedder

    emb = M3Embedder(str(tiny_checkpoint), device="cpu", query_max_length=8, overflow="warn")
    with caplog.at_level(logging.DEBUG, logger="milvus_m3"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        emb.encode_queries(["a query that is much longer than eight tokens, surely"])
    assert len([w for w in seen if "longer than" in str(w.message)]) == 1
    assert not [r for r in caplog.records if "longer than" in r.getMessage()]
    # the CLI shows it as one line
    db = str(tmp_path / "o.db")
    assert main(["create", "--collection", "o", "--uri", db, "--model", str(tiny_checkpoint)]) == 0
    release(db)
    proc = run(
        [
            "search",
            "a query that is much longer than eight tokens, surely",
            "--collection",
            "o",
            "--uri",
            db,
            "--model",
            str(tiny_checkpoint),
            "--max-length",
            "8",
        ],
        tmp_path,
        env=env_for(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("longer than 8 tokens") == 1, proc.stderr
    assert "milvus-m3: WARNING: 1 of 1 query texts" in proc.stderr and "UserWarning" not in proc.stderr
