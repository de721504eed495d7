"""Milvus URIs: a Lite file or a server URI, credentials taken out of it, and a redacted form to show.

Private to ``connection.py`` (which re-exports ``redact_uri``).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["check_server_uri", "is_local_file_uri", "redact_uri", "split_credentials"]

_SCHEMES = ("http", "https", "tcp", "unix")


def _split_userinfo(uri: str) -> tuple[str, str | None]:
    """(the URI with its userinfo taken out, the raw userinfo or None).

    As RFC 3986 reads it, the userinfo ends at the last ``@`` before the first ``/``, ``?`` or ``#``
    after ``scheme://``: ``http://root:S3cret@127.0.0.1:1/db?x=a@b`` is host 127.0.0.1 with user root,
    never host ``b`` (which the last ``@`` of the whole URI would give, sending it the password).
    Only when no ``@`` comes before that first ``/``, ``?`` or ``#`` is the LAST ``@`` taken: a
    password or token may hold ``#``, ``/`` or ``?`` (``http://root:2024#Spring@host``), which a URL
    parser would take for the start of a fragment, path or query, connecting to the wrong host and
    showing the secret.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri, None
    end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority = rest[:end]
    if "@" in authority:
        userinfo, _, hostpart = authority.rpartition("@")
        return f"{scheme}://{hostpart}{rest[end:]}", userinfo
    userinfo, _, hostpart = rest.rpartition("@")
    return f"{scheme}://{hostpart}", userinfo


def redact_uri(uri: str) -> str:
    """The URI without any user:password part, safe to log or show."""
    bare, userinfo = _split_userinfo(uri)
    try:
        parts = urlsplit(bare)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "<unparsable uri>"
    if userinfo is None:
        return uri
    return urlunsplit((parts.scheme, f"***@{parts.netloc}", parts.path, parts.query, parts.fragment))


def split_credentials(uri: str) -> tuple[str, str | None]:
    """(the URI without user:password, "user:password" or "token" from it or None)."""
    bare, userinfo = _split_userinfo(uri)
    if userinfo is None:
        return uri, None
    user, sep, password = userinfo.partition(":")
    cred = unquote(user) + (":" + unquote(password) if sep else "")
    return bare, cred or None


def is_local_file_uri(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def check_server_uri(uri: str) -> None:
    try:
        parts = urlsplit(_split_userinfo(uri)[0])
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
