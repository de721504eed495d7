"""The CLI's server flags against a real gRPC server (Milvus Lite's server on 127.0.0.1): --timeout,
--retries and --db-name reach the connection, and a stopped server is one error naming the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from milvus_m3.cli import main
from tests.fixtures_server import LiteServer

pytestmark = pytest.mark.server


def test_info_and_create_with_the_server_flags(
    lite_server: LiteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--uri", lite_server.uri, "--timeout", "10", "--retries", "1", "--db-name", "default"]
    assert main(["create", "--collection", "flags", "--dense-dim", "8", *flags]) == 0
    assert main(["info", *flags]) == 0
    out = capsys.readouterr().out
    assert "flags: 0 rows" in out
    lite_server.stop()
    assert main(["info", *flags[:2], "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "after 1 tries" in err and "--retries" in err and "--uri" in err, err
    assert err.count("\n") == 1, err  # no retry lines with --retries 0: one error line


def test_tls_flags_reach_pymilvus(
    tmp_path: Path, lite_server: LiteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing PEM file is named by its flag; an existing one reaches pymilvus (a plain-text server then
    fails the call), as one error line."""
    missing = tmp_path / "no-such-ca.pem"
    argv = [
        "info",
        "--uri",
        lite_server.uri,
        "--retries",
        "0",
        "--timeout",
        "3",
        "--secure",
        "--server-pem",
        str(missing),
    ]
    assert main(argv) == 2  # a usage error, before any connection
    err = capsys.readouterr().err.strip()
    assert err == f"milvus-m3: error: --server-pem {missing}: no such file; give the path of the PEM file"
    # an existing file is handed to pymilvus, which reads it (a plain-text server then fails the call)
    pem = tmp_path / "server.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    argv[-1] = str(pem)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("milvus-m3: error:") and len(err.splitlines()) <= 2, err
