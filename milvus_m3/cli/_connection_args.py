"""The connection flags every command takes (--uri, --token, deadlines, retries, database, TLS)
and the ConnectionOptions they describe."""

from __future__ import annotations

import argparse
import os

from ..engine.connection import ConnectionOptions, RetryPolicy
from ..errors import ConfigError
from ._argtypes import default, env_arg, from_args, non_negative_arg, seconds_arg

DEFAULT_URI = "./milvus_m3.db"
URI_ENV = "MILVUS_URI"
TOKEN_ENV = "MILVUS_TOKEN"

_TLS_FILES = (
    ("--server-pem", "server_pem_path"),
    ("--ca-pem", "ca_pem_path"),
    ("--client-pem", "client_pem_path"),
    ("--client-key", "client_key_path"),
)


def connection_options(args: argparse.Namespace) -> ConnectionOptions:
    """The ``ConnectionOptions`` the connection flags describe (each flag fills the field of its name;
    ``--retries N`` is ``RetryPolicy(attempts=N + 1)``)."""
    for flag, dest in _TLS_FILES:
        path = getattr(args, dest, None)
        if path and not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file; give the path of the PEM file")
    retries = getattr(args, "retries", None)
    retry = RetryPolicy() if retries is None else RetryPolicy(attempts=retries + 1)
    return from_args(ConnectionOptions, args, token=getattr(args, "token", None) or None, retry=retry)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--uri, --token and the server options (deadlines, retries, database, TLS)."""
    conn = parser.add_argument_group("connection")
    conn.add_argument(
        "--uri",
        default=env_arg(URI_ENV, DEFAULT_URI),
        help=f"Milvus Lite file (*.db) or server URI (default: ${URI_ENV} or {DEFAULT_URI})",
    )
    conn.add_argument(
        "--token", default=env_arg(TOKEN_ENV), help=f"server token, user:password (default: ${TOKEN_ENV})"
    )
    conn.add_argument("--db-name", default=None, metavar="NAME", help="server database (default: default)")
    conn.add_argument(
        "--timeout",
        type=seconds_arg,
        default=default(ConnectionOptions, "timeout"),
        metavar="SECONDS",
        help="deadline of one server call (default %(default)s)",
    )
    conn.add_argument(
        "--retries",
        type=non_negative_arg,
        default=default(RetryPolicy, "attempts") - 1,
        metavar="N",
        help="retries of a call that failed because the server was away (default %(default)s; "
        "0 gives up at once)",
    )
    tls = parser.add_argument_group("TLS (server only; an https:// URI turns it on)")
    tls.add_argument(
        "--secure", action="store_const", const=True, default=None, help="use TLS with an http:// URI"
    )
    tls.add_argument("--server-pem", dest="server_pem_path", metavar="PATH", help="server certificate")
    tls.add_argument("--server-name", metavar="NAME", help="name the server certificate is checked against")
    tls.add_argument("--ca-pem", dest="ca_pem_path", metavar="PATH", help="CA certificate (mutual TLS)")
    tls.add_argument(
        "--client-pem", dest="client_pem_path", metavar="PATH", help="client certificate (mutual TLS)"
    )
    tls.add_argument("--client-key", dest="client_key_path", metavar="PATH", help="client key (mutual TLS)")
