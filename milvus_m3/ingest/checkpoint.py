"""Resume state: the checkpoint file (atomic JSON writes) and the errors file of bad rows.

With ``state_path`` the job writes a checkpoint after each batch's upsert has returned (write to a
temporary file, fsync, ``os.replace``, fsync the directory): per input file, how many records are settled
(written or reported bad), plus the errors file's length at that point. ``resume=True`` skips the settled
records and cuts the errors file back to the recorded length, so that after ``kill -9`` at any moment the
job finishes with exactly the input's documents stored. A resume with no checkpoint file starts from the
beginning. The state names its target (the URI without credentials, the database, the collection and
the build id milvus-m3 wrote into the collection's record, and the engine's collection id where it gives
one): a resume into another target is refused, and one into a collection dropped and recreated since
starts from the beginning. A copied schema copies the build id, and Milvus Lite gives every collection
the id 0, so the state also keeps the id of the last row written (``probe``): a resume into a collection
that does not hold that row (a new instance, or one whose rows were deleted) starts from the beginning
too, never skipping records whose rows are not there. Resume trusts that the
first records of each file are the ones an earlier run saw, and checks it: the state keeps a blake2b
digest of each JSONL / CSV / TSV input up to its last settled record, which the reader compares as it
passes over those records (a fix or an append after that point resumes; a change before it is
refused). A Parquet input (no digest) whose size or mtime changed is refused. ``force``
(``--force-resume``) resumes anyway.

The errors file holds one JSON line per bad row, ``{"file", "line", "id", "field", "error"}``, appended
and fsynced per batch before the batch's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine.uri import split_credentials
from ..errors import ConfigError
from .readers import STDIN
from .records import RowError

__all__ = [
    "STATE_VERSION",
    "Checkpoint",
    "ErrorLog",
    "atomic_write_json",
    "default_state_path",
    "file_stat",
    "fsync_dir",
    "source_key",
]

logger = logging.getLogger("milvus_m3.ingest")

STATE_VERSION = 1


def default_state_path(
    uri: str,
    collection: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    inputs: Sequence[str] | None = None,
) -> Path:
    """Where the CLI keeps a job's checkpoint: next to a Milvus Lite file (``x.db`` ->
    ``x.<collection>.ingest-state.json``), else ``./<collection>.<key>.ingest-state.json`` where ``key``
    is a hash of the server URI (without credentials) and the ``inputs``: jobs into two servers, or of
    two input sets, from one folder keep two states. Without ``inputs``: ``./<collection>.ingest-state.json``."""
    if uri.endswith(".db") and "://" not in uri:
        db = Path(uri)
        return db.with_name(f"{db.stem}.{collection}.ingest-state.json")
    if inputs is None:
        return Path(directory or ".") / f"{collection}.ingest-state.json"
    bare = split_credentials(uri)[0]
    key = hashlib.blake2b("\0".join([bare, *sorted(source_key(i) for i in inputs)]).encode(), digest_size=4)
    return Path(directory or ".") / f"{collection}.{key.hexdigest()}.ingest-state.json"


def fsync_dir(path: Path) -> None:
    """fsync a directory (POSIX), so that a rename in it survives a crash."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` so that a crash leaves the old file or the new one: a temporary file, fsync,
    ``os.replace``, fsync the directory."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per write
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def source_key(source: str) -> str:
    """The checkpoint's key for an input: its resolved path (``-`` for stdin)."""
    return source if source == STDIN else str(Path(source).resolve())


def file_stat(source: str) -> dict[str, int] | None:
    """Size and mtime of an input (None for stdin): a resume logs a file that changed."""
    if source == STDIN:
        return None
    st = os.stat(source)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class Checkpoint:
    """The state file: per input, the records settled; the errors file's length; the job's options.

    ``options`` are the ones a resumed run must share with the run that wrote the file
    (``IngestOptions.resume_options``); a resume with other ones is refused, naming each difference.
    """

    def __init__(
        self,
        path: Path | None,
        options: Mapping[str, Any],
        resume: bool,
        target: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        self.path = path
        self.options = dict(options)
        self.target = dict(target or {})
        self.force = force
        self.inputs: dict[str, dict[str, Any]] = {}
        self.errors_offset: int | None = None
        self.probe: str | int | None = None
        """The id of the last row written (what a resume checks the collection still holds)."""
        self.resumed = False
        if path is None or not resume:
            return
        if not path.is_file():
            logger.info("no checkpoint at %s: starting from the beginning", path)
            return
        stored, inputs, offset, stored_target, probe = _load(path)
        if not self._same_target(path, stored_target):
            return
        diff = sorted(k for k in set(stored) | set(self.options) if stored.get(k) != self.options.get(k))
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} then, {self.options.get(k)!r} now" for k in diff)
            raise ConfigError(
                f"cannot resume from {path}: the job's options changed ({shown}); use the same options, or run "
                "without --resume to start over (upserts make that safe)"
            )
        self.inputs = inputs
        self.errors_offset = int(offset) if isinstance(offset, int) else None
        self.probe = probe
        self.resumed = True

    def start_over(self, why: str) -> None:
        """Forget what the state file settled (before ``begin``): the job starts from the beginning."""
        if self.resumed:
            logger.warning("%s: %s no longer applies; starting from the beginning", why, self.path)
        self.inputs, self.errors_offset, self.probe, self.resumed = {}, None, None, False

    def _same_target(self, path: Path, stored: Mapping[str, Any]) -> bool:
        """ConfigError for a state of another target; False (start over) for a recreated collection."""
        for key in ("uri", "db_name"):
            if key in stored and key in self.target and stored[key] != self.target[key]:
                raise ConfigError(
                    f"cannot resume from {path}: it belongs to another target ({key} {stored[key]!r}, this job "
                    f"{self.target[key]!r}); give this job its own --state, or run without --resume"
                )
        for key in ("build_id", "collection_id"):
            old_id, new_id = stored.get(key), self.target.get(key)
            if old_id and new_id and old_id != new_id:
                logger.warning(
                    "collection %r was recreated since %s was written (another %s): it no longer applies; "
                    "starting from the beginning",
                    self.target.get("collection"),
                    path,
                    key,
                )
                return False
        return True

    def done(self, source: str) -> int:
        entry = self.inputs.get(source_key(source))
        return int(entry.get("done", 0)) if entry else 0

    def digest(self, source: str) -> str | None:
        """The digest of ``source`` up to its last settled record (None: not recorded, e.g. Parquet)."""
        entry = self.inputs.get(source_key(source))
        value = entry.get("digest") if entry else None
        return value if isinstance(value, str) else None

    def id_choice(self, source: str) -> tuple[bool, str | None]:
        """(known, field): the id field an earlier run chose for ``source`` (None: content hashes)."""
        entry = self.inputs.get(source_key(source))
        if entry is None or "id_field" not in entry:
            return False, None
        return True, entry["id_field"]

    def id_choices(self, sources: Sequence[str]) -> dict[str, str | None]:
        """The id fields an earlier run chose, for those of ``sources`` it chose one for."""
        out: dict[str, str | None] = {}
        for source in sources:
            known, choice = self.id_choice(source)
            if known:
                out[source] = choice
        return out

    def begin(self, sources: Sequence[str]) -> None:
        for source in sources:
            key = source_key(source)
            stat = file_stat(source)
            entry = self.inputs.setdefault(key, {"done": 0})
            changed = (
                self.resumed and entry.get("stat") and stat and entry["stat"] != stat and entry.get("done")
            )
            if changed and entry.get("digest"):
                # the reader checks the settled records against the digest as it passes over them
                logger.info(
                    "%s changed since the checkpoint; its first %d records are checked", source, entry["done"]
                )
            elif changed:
                if not self.force:
                    raise ConfigError(
                        f"cannot resume: {source} changed since the checkpoint {self.path} (size {entry['stat'].get('size')} "
                        f"-> {(stat or {}).get('size')} bytes, or its mtime), so its first {entry['done']} records may not be the "
                        "ones written. Run without --resume to ingest it again (upserts make that safe), or pass "
                        "--force-resume (force_resume=True) if lines were only appended"
                    )
                logger.warning(
                    "%s changed since the checkpoint (size/mtime); resuming after its first %d records (forced)",
                    source,
                    entry["done"],
                )
            if stat:
                entry["stat"] = stat

    def commit(
        self,
        positions: Mapping[str, int],
        id_choices: Mapping[str, str | None],
        errors_offset: int | None,
        finished: bool = False,
        digests: Mapping[str, str] | None = None,
        probe: str | int | None = None,
    ) -> None:
        """Record ``positions`` (records settled per input), id choices and the errors file's length;
        ``probe``: the id of a row this commit covers, written (the last of the batch)."""
        for source, done in positions.items():
            entry = self.inputs.setdefault(source_key(source), {"done": 0})
            if done >= int(entry.get("done", 0)):
                entry["done"] = done
                if digests and source in digests:
                    entry["digest"] = digests[source]
        for source, choice in id_choices.items():
            self.inputs.setdefault(source_key(source), {"done": 0})["id_field"] = choice
        self.errors_offset = errors_offset
        if probe is not None:
            self.probe = probe
        if self.path is None:
            return
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "options": self.options,
                "target": self.target,
                "inputs": self.inputs,
                "errors_offset": errors_offset,
                "probe": self.probe,
                "finished": finished,
                "updated": time.time(),
            },
        )


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a count (an int >= 0)")
    return value


def _load(
    path: Path,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], Any, dict[str, Any], str | int | None]:
    """(options, inputs, errors_offset, target, probe) of a state file; ConfigError when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
        stored = dict(data["options"])
        inputs = {str(k): dict(v) for k, v in data["inputs"].items()}
        for key, entry in inputs.items():
            _count(entry.get("done", 0), f'"done" of {key}')
            if not isinstance(entry.get("id_field"), (str, type(None))) or not isinstance(
                entry.get("stat", {}), dict
            ):
                raise ValueError(f"the entry of {key} is malformed")
            if not isinstance(entry.get("digest", ""), str):
                raise ValueError(f'"digest" of {key} is not a string')
        offset = data.get("errors_offset")
        if offset is not None:
            _count(offset, '"errors_offset"')
        target = dict(data.get("target") or {})
        probe = data.get("probe")
        if isinstance(probe, bool) or not isinstance(probe, (str, int, type(None))):
            raise ValueError(f'"probe" is {probe!r}, not a row id')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"the ingest state file {path} is unreadable ({exc}); if it is the state of an earlier run, delete it "
            "and run without --resume (upserts make re-ingesting safe); if it is another file, give --state "
            "another path"
        ) from exc
    return stored, inputs, offset, target, probe


class ErrorLog:
    """The errors file: JSON lines appended and fsynced per batch, before the batch's checkpoint."""

    def __init__(self, path: Path | None, resume_offset: int | None, resumed: bool) -> None:
        self.path = path
        self.offset = 0
        if path is None:
            return
        # guard.check_paths made sure an existing file is a milvus-m3 errors file: this job's own kind
        if resumed and path.exists():
            size = path.stat().st_size
            self.offset = min(size, resume_offset or 0)
            if size > self.offset:
                with open(path, "r+b") as fh:  # drop lines of a batch the checkpoint did not cover
                    fh.truncate(self.offset)
        elif path.exists():
            with open(path, "r+b") as fh:  # an earlier run's bad rows: emptied, never deleted
                fh.truncate(0)

    def write(self, errors: Sequence[RowError]) -> None:
        if self.path is None or not errors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.writelines(
                json.dumps(err.to_json(), ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
                for err in errors
            )
            fh.flush()
            os.fsync(fh.fileno())
            self.offset = fh.tell()
