"""Milvus URIs: a Lite file or a server URI, credentials taken out of it, and a redacted form to show.

Private to ``connection.py`` (which re-exports ``redact_uri``).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError

__all__ = ["check_server_uri", "is_local_file_uri", "redact_uri", "split_credentials"]

_SCHEMES = ("http", "https", "tcp", "unix")


def redact_uri(uri: str) -> str:
    """The URI without any user:password part, safe to log or show."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "<unparsable uri>"
    if parts.username or parts.password or "@" in parts.netloc:
        host = parts.hostname or ""
        if port:
            host = f"{host}:{port}"
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return uri


def split_credentials(uri: str) -> tuple[str, str | None]:
    """(the URI without user:password, "user:password" or "token" from it or None)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    cred = unquote(user) + (":" + unquote(password) if sep else "")
    return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), cred or None


def is_local_file_uri(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def check_server_uri(uri: str) -> None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(
            f"uri {redact_uri(uri)!r} does not parse; give a Milvus Lite file (./milvus_m3.db) or a server URI "
            "like http://localhost:19530"
        ) from None
    if parts.scheme.lower() not in _SCHEMES or (parts.scheme.lower() != "unix" and not parts.hostname):
        raise ConfigError(
            f"uri {redact_uri(uri)!r} is neither a Milvus Lite file (ending in .db) nor a server URI; "
            "give e.g. ./milvus_m3.db or http://localhost:19530 (https://... for TLS)"
        )
