"""What the command line adds around the library: messages in terms of its flags, filter hints, the
retry log cut to one line, and the files a command must not create or leave behind.

The library's messages name its Python parameters (``exists_ok=True``, ``model_name_or_path``); under
the CLI the same errors name the flags instead. The mapping is here, so the library's messages (which
tests match) stay as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.uri import is_local_file_uri
from ..errors import CollectionNotFoundError, MilvusM3Error, MilvusUnavailableError

if TYPE_CHECKING:
    from ..collection.manager import CollectionManager

__all__ = [
    "EPILOG",
    "EXIT_REJECTED",
    "FLAG_NAMES",
    "READ_ONLY_COMMANDS",
    "FirstRetryOnly",
    "OneLineParser",
    "check_read_only_target",
    "drop_if_empty",
    "filter_hint",
    "for_cli",
    "remove_new_lite_file",
    "remove_state_file",
    "show_warning",
]

logger = logging.getLogger("milvus_m3.cli")

EXIT_REJECTED = 3
"""``ingest --strict-exit``: the job finished, but rejected rows (they are in the errors file)."""

EPILOG = f"""\
search modes: hybrid (RRF or weighted fusion), dense, sparse, m3 (dense + 0.3 x sparse), m3-all
  (m3 re-ranked with ColBERT); eval runs them all on a BEIR-format dataset.

connection (every command): --uri ($MILVUS_URI, else ./milvus_m3.db), --token ($MILVUS_TOKEN),
  --db-name, --timeout, --retries, TLS: --secure, --server-pem, --server-name, --ca-pem,
  --client-pem, --client-key. -v (before or after the command) logs what happens.

exit codes:
  0    done
  1    a failure: Milvus unreachable, model, collection (the message says which)
  2    a usage or input error: bad option, bad file, a bad row with ingest --on-error fail
  {EXIT_REJECTED}    ingest --strict-exit finished but rejected rows (listed in the errors file)
  130  interrupted
  143  terminated (SIGTERM), stopped as on Ctrl-C

Run 'milvus-m3 COMMAND --help' for a command's options."""
"""The end of ``milvus-m3 --help``: the commands, the shared options and the exit codes."""

READ_ONLY_COMMANDS = frozenset({"info", "search", "drop"})
"""Commands that never create a Milvus Lite file (a missing one is an error naming --uri)."""

FLAG_NAMES: tuple[tuple[str, str], ...] = (
    (r"\brecreate=True / --recreate\b", "--recreate"),
    (r"\brecreate=True \(--recreate\)", "--recreate"),
    (r"\brecreate \(--recreate\)", "--recreate"),
    (r"\bexists_ok=True\b", "--exists-ok"),
    (r"\bexists_ok or recreate\b", "--exists-ok or --recreate"),
    (r"\brecreate=True\b", "--recreate"),
    (r"\bresume=True\b", "--resume"),
    (r"\bmodel_name_or_path\b", "--model"),
    (r"\bgroup_by=", "--group-by "),
    (r"\bgroup_by\b", "--group-by"),
    (r"\b(?:document|query)_max_length\b", "--max-length"),
    (r"\bdense_dim=", "--dense-dim "),
    (r"\bchunk_tokens\b", "--chunk-tokens"),
    (r"\bchunk_overlap\b", "--chunk-overlap"),
    (r"\bon_error='fail'", "--on-error fail"),
    (r"\bCollectionSpec\(chunked=True\) \((milvus-m3 create --chunked)\)", r"\1"),
    (r"\boverflow='warn' or 'truncate' to cut them", "--truncate to cut them"),
    (r", or build the filter with milvus_m3\.filters\.F", " (milvus-m3 search --help shows examples)"),
)
"""(regex, replacement) pairs turning the library's parameter names into the CLI's flags."""

_UNAVAILABLE_TAIL = re.compile(
    r"the URI and port, TLS settings and credentials; or raise RetryPolicy\.total_seconds"
    r"(?: \(and --timeout, ConnectionOptions\.timeout\))?\."
)
_CLI_UNAVAILABLE = (
    "--uri (host and port), the TLS flags (--secure, --server-pem, --ca-pem, ...) and --token. "
    "--retries N and --timeout SECONDS set how long milvus-m3 waits (--retries 0: give up at once)."
)
_NESTED_MILVUS = re.compile(r"\(MilvusException: <MilvusException: \(code=\d+, message=(.*?)\)>\)")


def for_cli(text: str, exc: BaseException, args: argparse.Namespace) -> str:
    """``text`` (the error's redacted message) with the library's parameter names as CLI flags."""
    for pattern, flag in FLAG_NAMES:
        text = re.sub(pattern, flag, text)
    if isinstance(exc, MilvusUnavailableError):
        text = _NESTED_MILVUS.sub(r"(\1)", text)
        text = _UNAVAILABLE_TAIL.sub(_CLI_UNAVAILABLE, text)
    return text


class FirstRetryOnly(logging.Filter):
    """Lets the first retry warning of a command through (marked), and drops the rest (``-v`` shows all)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "milvus_m3.connection" or not str(record.msg).startswith("Milvus %s: transient"):
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = f"{record.msg} (-v shows each retry; --retries and --timeout bound them)"
        return True


# ------------------------------------------------------------------------------------------- filters

_KEYWORDS = frozenset("and or not in like is null true false exists".split())
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_NAME = re.compile(r"(?<![\w\]\"'.])([A-Za-z_]\w*)(?!\w|\s*[(\[])")


def _bare_names(expr: str) -> list[str]:
    """The names in ``expr`` outside string literals that are not keywords, calls or subscripts."""
    masked = _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)
    names = []
    for m in _NAME.finditer(masked):
        name = m.group(1)
        if name.lower() not in _KEYWORDS and name not in names:
            names.append(name)
    return names


def filter_hint(expr: str | None, fields: Iterable[str]) -> str:
    """For a rejected ``--filter``: the names that are not fields of the collection, and the filter
    written with them as keys of the JSON ``metadata`` field (where ingest --metadata-fields keeps them).
    Empty when every name is a field."""
    if not expr:
        return ""
    known = set(fields)
    unknown = [n for n in _bare_names(expr) if n not in known]
    if not unknown or "metadata" not in known:
        return ""
    masked = _STRING.sub(lambda m: "\0" * len(m.group()), expr)
    out, last = [], 0
    for m in _NAME.finditer(masked):
        if m.group(1) in unknown:
            out += [expr[last : m.start(1)], f'metadata["{m.group(1)}"]']
            last = m.end(1)
    suggestion = "".join(out) + expr[last:]
    names = ", ".join(repr(n) for n in unknown)
    return (
        f"{names} {'is not a field' if len(unknown) == 1 else 'are not fields'} of the collection "
        f"(fields: {', '.join(sorted(known))}); keys kept by ingest --metadata-fields are in the JSON "
        f"field metadata: --filter '{suggestion}'"
    )


# --------------------------------------------------------------------------------------------- files


def check_read_only_target(args: argparse.Namespace) -> None:
    """A read-only command on a Milvus Lite file that does not exist: an error naming --uri, instead of
    an empty new file and 'no collections'."""
    uri = getattr(args, "uri", None)
    if args.command not in READ_ONLY_COMMANDS or not uri or not is_local_file_uri(uri):
        return
    if not os.path.lexists(uri):
        what = f"collection {args.collection!r}" if getattr(args, "collection", None) else "collections"
        raise CollectionNotFoundError(
            f"no Milvus Lite file at {uri}, so no {what} there; check --uri (or $MILVUS_URI), "
            "e.g. the path ingest wrote to (nothing was created)"
        )


@contextlib.contextmanager
def remove_new_lite_file(uri: str) -> Iterator[None]:
    """Around a command that may create the Lite file ``uri``: when the command fails and the file is
    new (it did not exist before) and holds no collection, it is removed. Put it outside the manager's
    ``with``, so the file is closed first."""
    new = is_local_file_uri(uri) and not os.path.lexists(uri)
    try:
        yield
    except BaseException:
        if new and os.path.isfile(uri) and _holds_no_collection(uri):
            with contextlib.suppress(OSError):
                os.remove(uri)
        raise


def _holds_no_collection(uri: str) -> bool:
    from ..collection.manager import CollectionManager

    try:
        with CollectionManager(uri) as manager:
            return not manager.list_collections()
    except MilvusM3Error:
        return False


def remove_state_file(path: Path, collection: str) -> bool:
    """Remove ``path`` when it is milvus-m3's ingest state file for ``collection`` (a file of another kind
    or of another collection is left alone). Whether it was removed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ours = isinstance(data, dict) and "version" in data and data["options"]["collection"] == collection
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not ours:
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def drop_if_empty(
    manager: CollectionManager, collection: str, state: Path, note: Callable[[str], None]
) -> None:
    """After a failed ingest into a collection this run created: drop it when nothing reached it (with
    its state file), so the run leaves what was there before. Rows that were written stay, for --resume."""
    try:
        if manager.count(collection):
            note(f"kept collection {collection!r}: rows were written; --resume finishes the job")
            return
        manager.drop(collection)
        remove_state_file(state, collection)
        note(f"dropped the empty collection {collection!r} this run had created")
    except MilvusM3Error:
        logger.debug("could not drop the new collection after the failure", exc_info=True)


def show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    """A warning as one ``milvus-m3: WARNING:`` line, like the log records (-v shows Python's format)."""
    print(f"milvus-m3: WARNING: {message}", file=sys.stderr)


# Characters a terminal acts on (C0/C1 controls: ANSI escapes, CSI; line and paragraph separators;
# bidirectional overrides, which reorder what is shown): stored text shows them escaped.
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


# Inside JSON strings json.dumps(ensure_ascii=False) leaves these as they are; line-splitting readers
# (str.splitlines, many log tools) break a line at U+0085, U+2028 and U+2029.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every other error of the CLI: ``milvus-m3: error:
    argument --legs: give legs from dense, sparse, bm25 ...; see milvus-m3 search --help``, exit 2.
    (argparse prints the whole usage block first, a screen of flags that hides the one line that matters.)
    Subparsers made by ``add_subparsers`` are of this class too."""

    def error(self, message: str) -> typing.NoReturn:
        text = terminal_safe(" ".join(message.split()))
        self.exit(2, f"milvus-m3: error: {text}; see {self.prog} --help\n")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape (``\\x1b``, ``\\u202e``)."""
    return _TERMINAL_UNSAFE.sub(_escape, text)


def json_line(obj: Any) -> str:
    """``obj`` as one JSON line that stays one line for any line-splitting reader (and in a terminal)."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
