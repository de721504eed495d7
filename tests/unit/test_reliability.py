"""Reliability, round two (issue 16), the parts that need neither Milvus nor a model: URIs with odd
credentials (SECURITY), raw filters that would break out of their parentheses (SECURITY), terminal
and JSON-lines escaping of the CLI's output (SECURITY)."""

from __future__ import annotations

import json

import pytest

from milvus_m3.errors import ConfigError, FilterError
from milvus_m3.filters import F, render


@pytest.mark.parametrize(
    ("uri", "host", "cred"),
    [
        ("http://root:2024#Spring@db.example:19530", "http://db.example:19530", "root:2024#Spring"),
        ("http://root:ab/cd@db.example:19530", "http://db.example:19530", "root:ab/cd"),
        ("https://u:why?x=1@db.example:443/db1", "https://db.example:443/db1", "u:why?x=1"),
        ("http://u:p@ss@db.example:19530", "http://db.example:19530", "u:p@ss"),
        ("http://tok%2Fen@db.example:19530", "http://db.example:19530", "tok/en"),
        ("http://db.example:19530", "http://db.example:19530", None),
    ],
)
def test_credentials_are_split_on_the_last_at(uri: str, host: str, cred: str | None) -> None:
    from milvus_m3.engine.uri import redact_uri, split_credentials

    assert split_credentials(uri) == (host, cred)
    shown = redact_uri(uri)
    if cred:
        assert cred.split(":")[-1] not in shown and shown.startswith(host.split("//")[0] + "//***@")
        assert host.split("//")[1] in shown
    else:
        assert shown == uri


def test_check_server_uri_never_echoes_a_password() -> None:
    from milvus_m3.engine.uri import check_server_uri

    with pytest.raises(ConfigError) as exc:
        check_server_uri("ftp://root:2024#Spring@db.example:19530")
    assert "Spring" not in str(exc.value) and "2024" not in str(exc.value)


@pytest.mark.parametrize(
    "raw",
    ['id != "" ) or ( id != ""', "(a == 1", "a == 1)", ")(", "x in [1, 2", "x == 1 ]"],
)
def test_unbalanced_raw_filters_are_refused(raw: str) -> None:
    with pytest.raises(FilterError):
        render([raw, F.eq("tenant", "t1")], templates=False)
    with pytest.raises(FilterError):
        render(raw, templates=False)


@pytest.mark.parametrize("raw", ['text == ")"', "text == '(('", "(a == 1) and (b in [1, 2])", 'x == "\\")"'])
def test_balanced_raw_filters_pass(raw: str) -> None:
    expr, _ = render([raw, F.eq("tenant", "t1")], templates=False)
    assert expr.startswith(f"({raw}) and ")


def test_terminal_and_json_escaping() -> None:
    from milvus_m3.cli.commands import json_line, terminal_safe

    s = "a\x1b[2Jb\x9bc\u2028d\x85e\u202ef\tg"
    shown = terminal_safe(s)
    assert all(ch not in shown for ch in "\x1b\x9b\u2028\x85\u202e")
    assert "\\x1b[2J" in shown and "\\u202e" in shown
    line = json_line({"t": s})
    assert len(line.splitlines()) == 1 and json.loads(line) == {"t": s}


@pytest.mark.parametrize(
    ("uri", "host", "cred"),
    [
        ("http://root:S3cret@127.0.0.1:1/db?x=a@b", "http://127.0.0.1:1/db?x=a@b", "root:S3cret"),
        ("http://root:S3cret@db.example:19530#frag@x", "http://db.example:19530#frag@x", "root:S3cret"),
        ("http://tok@db.example:19530/db1/a@b", "http://db.example:19530/db1/a@b", "tok"),
        ("https://u:p@ss@db.example:443/?q=1@2@3", "https://db.example:443/?q=1@2@3", "u:p@ss"),
    ],
)
def test_userinfo_ends_before_the_path_query_or_fragment(uri: str, host: str, cred: str) -> None:
    """SECURITY (issue 27, item 9): ``http://root:S3cret@127.0.0.1:1/db?x=a@b`` was split on the LAST
    ``@``: host ``b``, and ``root:S3cret@127.0.0.1:1/db?x=a`` sent to it as credentials. An ``@`` before
    the first ``/``, ``?`` or ``#`` ends the userinfo at the last such ``@``."""
    from milvus_m3.engine.uri import check_server_uri, redact_uri, split_credentials

    check_server_uri(uri)
    assert split_credentials(uri) == (host, cred)
    shown = redact_uri(uri)
    assert shown == host.replace("//", "//***@", 1)
    assert cred.split(":")[-1] not in shown.split("@", 1)[0]
