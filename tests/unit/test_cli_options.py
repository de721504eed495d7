"""The CLI's options and messages without Milvus or a model: -v anywhere, the synopsis, the server flags
as ConnectionOptions, the library's parameter names as flags, filter hints, the retry log cut to one
line, state files, and the estimated totals of the ingest bar."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from milvus_m3.cli._messages import FirstRetryOnly, filter_hint, for_cli, remove_state_file
from milvus_m3.cli.parser import EPILOG, EXIT_REJECTED, build_parser, connection_options
from milvus_m3.engine.connection import ConnectionOptions, RetryPolicy
from milvus_m3.errors import ConfigError, MilvusUnavailableError
from milvus_m3.ingest.readers import estimate_records

LITE = ["--uri", "./x.db"]


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "info", *LITE],
        ["info", "-v", *LITE],
        ["info", *LITE, "--verbose"],
        ["--verbose", "drop", "--collection", "c"],
    ],
)
def test_verbose_before_or_after_the_command(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is True


def test_no_verbose_is_false_for_every_command() -> None:
    parser = build_parser()
    for argv in (
        ["info"],
        ["search", "q", "--collection", "c"],
        ["eval", "data"],
        ["drop", "--collection", "c"],
    ):
        assert parser.parse_args(argv).verbose is False


def test_help_lists_eval_token_m3_modes_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for needle in ("eval", "--token", "--retries", "--ca-pem", "exit codes:", "130", f"{EXIT_REJECTED} "):
        assert needle in out, needle
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    out = capsys.readouterr().out
    assert "m3-all" in out and "m3:" in out and 'metadata["topic"]' in out and "--token" in out
    import milvus_m3.cli as cli
    import milvus_m3.cli.commands as commands

    for doc in (cli.__doc__ or "", commands.__doc__ or ""):
        assert "eval" in doc and "--token" in doc and "m3-all" in doc, doc[:200]
    assert "--strict-exit" in EPILOG


def test_server_flags_fill_connection_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        [
            "info",
            "--uri",
            "https://milvus.example:19530",
            "--token",
            "root:secret",
            "--db-name",
            "research",
            "--timeout",
            "2.5",
            "--retries",
            "0",
            "--secure",
            "--server-pem",
            "s.pem",
            "--server-name",
            "milvus.example",
            "--ca-pem",
            "ca.pem",
            "--client-pem",
            "c.pem",
            "--client-key",
            "c.key",
        ]
    )
    with pytest.raises(ConfigError, match="--server-pem s.pem: no such file"):
        connection_options(args)
    for name in ("s.pem", "ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("pem")
    monkeypatch.chdir(tmp_path)
    assert connection_options(args) == ConnectionOptions(
        token="root:secret",
        db_name="research",
        timeout=2.5,
        retry=RetryPolicy(attempts=1),
        secure=True,
        server_pem_path="s.pem",
        server_name="milvus.example",
        ca_pem_path="ca.pem",
        client_pem_path="c.pem",
        client_key_path="c.key",
    )
    defaults = connection_options(build_parser().parse_args(["info"]))
    assert defaults == ConnectionOptions(token=defaults.token)  # the dataclass's defaults, untouched
    with pytest.raises(ConfigError, match="mutual TLS"):
        connection_options(build_parser().parse_args(["info", "--ca-pem", "ca.pem"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["info", "--timeout", "0"])


def test_library_parameter_names_become_flags() -> None:
    args = build_parser().parse_args(["create", "--collection", "c"])
    exists = (
        "collection 'c' already exists at ./x.db; pass exists_ok=True to reuse it (it is checked against the "
        "spec), recreate=True (--recreate) to drop and rebuild it, or choose another name"
    )
    text = for_cli(exists, ConfigError(exists), args)
    assert "--exists-ok" in text and "exists_ok" not in text and "--recreate (--recreate)" not in text
    model = "pass a checkpoint directory as model_name_or_path, or set $MILVUS_M3_MODEL to it"
    assert "--model" in for_cli(model, ConfigError(model), args)
    group = "group_by='title': Milvus groups by a varchar, int64 or bool field"
    assert for_cli(group, ConfigError(group), args).startswith("--group-by 'title'")


def test_unreachable_server_names_the_flags_not_the_python_setting() -> None:
    msg = (
        "Milvus at http://127.0.0.1:1 did not answer 'connect' after 8 tries in 19.1 s (MilvusException: "
        "<MilvusException: (code=2, message=Fail connecting to server on 127.0.0.1:1, illegal connection "
        "params or server unavailable)>). Check that the server is running and reachable (docker compose "
        "-f docker/docker-compose.yml ps; curl http://HOST:9091/healthz), the URI and port, TLS settings "
        "and credentials; or raise RetryPolicy.total_seconds."
    )
    text = for_cli(msg, MilvusUnavailableError(msg), build_parser().parse_args(["info"]))
    assert "RetryPolicy" not in text and "<MilvusException" not in text
    for flag in ("--uri", "--retries", "--timeout", "--secure", "--token"):
        assert flag in text, flag


def test_only_the_first_retry_warning_passes() -> None:
    keep = FirstRetryOnly()
    records = [
        logging.LogRecord(
            "milvus_m3.connection",
            logging.WARNING,
            __file__,
            1,
            "Milvus %s: transient failure on %s",
            ("u", "x"),
            None,
        )
        for _ in range(7)
    ]
    passed = [r for r in records if keep.filter(r)]
    assert len(passed) == 1 and "-v shows each retry" in passed[0].getMessage()
    other = logging.LogRecord("milvus_m3.ingest", logging.WARNING, __file__, 1, "3 bad rows", (), None)
    assert keep.filter(other)


FIELDS = ("id", "text", "metadata", "dense", "sparse")


def test_filter_hint_rewrites_metadata_keys() -> None:
    assert 'metadata["topic"] == "biology"' in filter_hint('topic == "biology"', FIELDS)
    hint = filter_hint('topic in ["a", "b"] and lang == "en" and id like "x%"', FIELDS)
    assert 'metadata["topic"] in ["a", "b"] and metadata["lang"] == "en" and id like "x%"' in hint
    # names inside strings, subscripts and calls are left alone; known fields give no hint
    assert filter_hint('metadata["topic"] == "topic"', FIELDS) == ""
    assert filter_hint('json_contains(metadata["tags"], "x")', FIELDS) == ""
    assert filter_hint('id in ["a"] and not (text like "b%")', FIELDS) == ""


def test_remove_state_file_only_removes_milvus_m3_state_of_that_collection(tmp_path: Path) -> None:
    ours = tmp_path / "x.docs.ingest-state.json"
    ours.write_text(json.dumps({"version": 1, "options": {"collection": "docs"}, "inputs": {}}))
    other = tmp_path / "x.notes.ingest-state.json"
    other.write_text(json.dumps({"version": 1, "options": {"collection": "notes"}, "inputs": {}}))
    foreign = tmp_path / "x.misc.ingest-state.json"
    foreign.write_text("my own notes, not JSON")
    assert not remove_state_file(other, "docs") and other.exists()
    assert not remove_state_file(foreign, "misc") and foreign.exists()
    assert remove_state_file(ours, "docs") and not ours.exists()
    assert not remove_state_file(ours, "docs")  # gone already


def test_estimate_records_gives_the_ingest_bar_a_total(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in range(37)))
    assert estimate_records(str(jsonl), "jsonl") == 37
    no_newline = tmp_path / "b.jsonl"
    no_newline.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}')
    assert estimate_records(str(no_newline), "jsonl") == 2
    csv = tmp_path / "c.csv"
    csv.write_text("id,text\n1,a\n2,b\n3,c\n")
    assert estimate_records(str(csv), "csv") == 3
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    assert estimate_records(str(gz), "jsonl") is None  # unknown before reading
    assert estimate_records("-", "jsonl") is None
