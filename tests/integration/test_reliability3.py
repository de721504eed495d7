"""Reliability, round three (issue 27): the items of the engine, registry, CLI-parsing and eval pass.

Every test here failed on the code before the fix of the item it names (item numbers and letters of
the issue); each passes after it.
"""

from __future__ import annotations

import logging

import pytest

from milvus_m3.errors import MilvusM3Error

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------- item 9: '@' after the host


def test_at_in_the_query_never_moves_the_credentials_to_another_host() -> None:
    """SECURITY (item 9): ``http://root:S3cret@127.0.0.1:PORT/db?x=a@b`` connected to host ``b`` and
    sent ``root:S3cret@127.0.0.1:PORT/db?x=a`` to it as credentials."""
    from milvus_m3.engine.connection import Connection, RetryPolicy
    from tests.fixtures_server import free_port

    port = free_port()
    with pytest.raises(MilvusM3Error) as exc:
        Connection(
            f"http://root:S3cret@127.0.0.1:{port}/db?x=a@b",
            retry=RetryPolicy(attempts=1, total_seconds=5),
            connect_timeout=2,
        )
    text = f"{exc.value} {exc.value!r} {exc.value.__cause__!r}"
    assert f"127.0.0.1:{port}" in str(exc.value), text
    assert "S3cret" not in text


@pytest.mark.server
def test_at_in_the_query_reaches_the_named_server(
    milvus_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SECURITY (item 9), on the gRPC tier: the URI with credentials and ``@`` in its query reaches the
    server it names; the password shows in no repr and no log record."""
    from milvus_m3.engine.connection import Connection, RetryPolicy

    address = milvus_server.split("//", 1)[1]
    with caplog.at_level(logging.DEBUG, logger="milvus_m3"):
        conn = Connection(
            f"http://root:S3cret@{address}/?x=a@b", retry=RetryPolicy(attempts=2, total_seconds=10)
        )
        try:
            assert conn.call("list", conn.client.list_collections) is not None
            assert address in conn.uri and "S3cret" not in f"{conn!r} {conn.uri} {conn.display_uri}"
        finally:
            conn.close()
    assert "S3cret" not in caplog.text
