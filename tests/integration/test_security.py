"""Security (issue 6): hostile filter values, secrets in output, pickled code in checkpoints.

What other files already cover is not repeated: test_filters (hostile values through structured filters
on Milvus Lite), test_server (secrets in the manager's logs, reprs and errors against a server),
test_embedder (pickled code in ``sparse_linear.pt``). Here:

- hostile filter values on the server engine (templates) and on Lite (escaped literals), and through
  the CLI's ``--filter``: the same hits as the honest filter, nothing more;
- secrets never shown by the CLI (stdout, stderr, -v logs), a searcher's repr, or errors and logs of a
  search against a server;
- pickled code in ``colbert_linear.pt``, in a plain-pickle head, and in ``pytorch_model.bin`` (the
  encoder's own weights, loaded by transformers) is never run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3r-s3cret-pw"
TOKEN = "tok-9f8e7d6c5b4a"
_SCRIPT = Path(sys.executable).parent / "milvus-m3"
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "milvus_m3"]
"""The installed console script (``pip install -e .``), else the module."""


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS_", "PYTEST_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **extra)
    return env


# --------------------------------------------------------------------------- pickled code in checkpoints


class Payload:
    """Creates ``marker`` when unpickled by anything that runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _link_checkpoint(src: Path, dst: Path, skip: set[str]) -> Path:
    """A copy of ``src`` made of symlinks, without ``skip`` (write those as new files, never through a link)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).symlink_to(f.resolve())
    return dst


def _evil_colbert(d: Path, marker: Path) -> None:
    import torch

    torch.save({"weight": torch.zeros(32, 32), "bias": Payload(marker)}, d / "colbert_linear.pt")


def _plain_pickle_head(d: Path, marker: Path) -> None:
    """Not a torch zip file at all: a plain pickle stream, which torch.load reads as a legacy file."""
    with open(d / "sparse_linear.pt", "wb") as fh:
        pickle.dump({"weight": Payload(marker), "bias": [0.0]}, fh, protocol=2)


def _evil_bin_weights(d: Path, marker: Path) -> None:
    """The encoder's weights as pytorch_model.bin (no safetensors), with a payload among real tensors."""
    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = dict(load_file(str(d.parent / "src" / "model.safetensors")))
    state["embeddings.evil"] = Payload(marker)
    torch.save(state, d / "pytorch_model.bin")


EVIL = {
    "colbert_linear.pt": (_evil_colbert, {"colbert_linear.pt"}),
    "plain-pickle-sparse_linear.pt": (_plain_pickle_head, {"sparse_linear.pt"}),
    "pytorch_model.bin": (_evil_bin_weights, {"model.safetensors"}),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(EVIL))
def test_loading_never_runs_pickled_code(case: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from milvus_m3.embedder.model import M3Embedder

    write, skip = EVIL[case]
    (tmp_path / "src").symlink_to(tiny_checkpoint.resolve())
    d = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip)
    marker = tmp_path / "PWNED"
    write(d, marker)
    assert not marker.exists()
    with pytest.raises(ModelLoadError) as err:
        M3Embedder(d, device="cpu", precision="fp32")
    assert not marker.exists(), f"loading {case} ran pickled code"
    name = case.removeprefix("plain-pickle-")
    assert name in str(err.value) or str(d) in str(err.value)
    # the payload really is live: plain pickle would have run it
    if case != "pytorch_model.bin":
        import torch

        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            torch.load(d / name, weights_only=True)
        assert not marker.exists()


# ----------------------------------------------------------------------------------- secrets, CLI


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SECRET, TOKEN):
            assert secret not in text, f"{secret!r} leaked in:\n{text[-3000:]}"


def _selected(request: pytest.FixtureRequest, test_name: str) -> bool:
    """Whether ``test_name`` is part of this run (an autouse fixture starts nothing for a deselected test)."""
    return any(item.name == test_name for item in request.session.items)


@pytest.fixture(scope="module", autouse=True)
def closed_port_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[tuple[list[str], subprocess.Popen[str]]]]:
    """CLI commands against a port nothing listens on, started at once in the background: each one
    retries with backoff for ~20 s before it gives up, so they start with the module (autouse) and run
    while the other tests do; the test that reads them comes last."""
    if not _selected(request, "test_cli_never_echoes_credentials_of_an_unreachable_server"):
        yield []
        return
    from tests.fixtures_server import free_port

    port = free_port()
    cwd = tmp_path_factory.mktemp("cli-secrets")
    runs = [
        (["info", "--uri", f"http://alice:{SECRET}@127.0.0.1:{port}", "-v"], {}),
        (
            [
                "info",
                "--collection",
                "docs",
                "--uri",
                f"http://127.0.0.1:{port}",
                "--token",
                f"root:{SECRET}",
            ],
            {},
        ),
        (
            ["search", "q", "--collection", "docs", "--uri", f"https://127.0.0.1:{port}", "-v"],
            {"MILVUS_TOKEN": TOKEN},
        ),
    ]
    procs = [
        (
            args,
            subprocess.Popen(
                CLI + args,
                cwd=cwd,
                env=cli_env(**extra),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
        for args, extra in runs
    ]
    try:
        yield procs
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.server
def test_cli_never_echoes_credentials_of_an_unreachable_server(
    closed_port_runs: list[tuple[list[str], subprocess.Popen[str]]],
) -> None:
    for args, p in closed_port_runs:
        out, err = p.communicate(timeout=120)
        assert p.returncode not in (0, None), f"{args}: exit {p.returncode}"
        assert "Traceback" not in err, err[-3000:]
        assert "did not answer" in err and "127.0.0.1" in err, err[-2000:]  # says what and where
        _no_secret(out, err)
        assert "alice" not in err  # the user name is dropped from the shown URI as well


@pytest.mark.server
def test_cli_never_echoes_credentials_of_a_live_server(milvus_server: str, tmp_path: Path) -> None:
    """Milvus Lite's server does not check credentials: the commands connect, then fail or succeed."""
    host = milvus_server.removeprefix("http://")
    runs = [
        ["info", "--uri", f"http://root:{SECRET}@{host}", "-v"],
        ["info", "--uri", milvus_server, "--token", f"root:{SECRET}", "--collection", "no_such", "-v"],
        ["drop", "--uri", milvus_server, "--token", TOKEN, "--collection", "no_such", "--yes"],
        ["search", "q", "--uri", f"http://root:{SECRET}@{host}", "--collection", "no_such", "--json"],
    ]
    for args in runs:
        p = subprocess.run(
            CLI + args, check=False, cwd=tmp_path, env=cli_env(), text=True, capture_output=True, timeout=120
        )
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        _no_secret(p.stdout, p.stderr)
        if "no_such" in args:
            assert p.returncode != 0 and "no_such" in p.stderr
        else:
            assert p.returncode == 0, p.stderr[-2000:]
            assert host in p.stdout  # the server is named, without its credentials


# ------------------------------------------------------------------------------ hostile filter values

HOSTILE = [
    "plain",
    'a" or id != "',
    '" or 1 == 1 or "',
    "' or ''=='",
    ") or (id != ''",
    'x") or ("1"=="1',
    "back\\slash",
    "trailing\\",
    '\\"',
    '\\\\" or id != "',
    "new\nline",
    'new\n" or id != "',
    "crlf\r\nend",
    "tab\tand\x01ctl",
    "{p0}",
    "{id}",
    "%_",
    "ünï©ødé 🙂 検索 \u202eevil",
    "\u2028line sep",
    "z" * 4000 + '" or id != "',
    "",
]


def _hostile_store(manager: Any, name: str) -> dict[str, str]:
    from milvus_m3.collection.manager import CollectionSpec, ScalarField
    from tests.fakes import FakeEncoder

    enc = FakeEncoder(dim=8)
    spec = CollectionSpec(
        dense_dim=8,
        model_name=enc.model_name,
        scalar_fields=(ScalarField(name="tag", max_length=8192, default=""),),
    )
    manager.create_collection(name, spec=spec, recreate=True)
    ids = [f"h{i:02d}" for i in range(len(HOSTILE))]
    texts = [f"shared words document {i}" for i in range(len(HOSTILE))]
    manager.upsert(
        name,
        ids=ids,
        texts=texts,
        embeddings=enc.encode_documents(texts),
        metadata=[{"tag": v} for v in HOSTILE],
        fields={"tag": HOSTILE},
    )
    return dict(zip(ids, HOSTILE, strict=False))


def _hits(searcher: Any, flt: Any, mode: str) -> set[str]:
    return {
        h.id
        for h in searcher.search(
            "shared words document", limit=100, candidate_limit=200, filter=flt, mode=mode
        )
    }


def _check_hostile(manager: Any, name: str, stored: dict[str, str]) -> int:
    from milvus_m3.filters import F
    from milvus_m3.search import HybridSearcher
    from tests.fakes import FakeEncoder

    searcher = HybridSearcher(manager, name, FakeEncoder(dim=8))
    checked = 0
    for rid, value in stored.items():
        honest = _hits(searcher, F.eq("id", rid), "dense")
        assert honest == {rid}
        for field in ("tag", "metadata.tag"):
            for mode in ("hybrid", "dense", "sparse"):
                got = _hits(searcher, F.eq(field, value), mode)
                assert got == {r for r, v in stored.items() if v == value}, (field, mode, value[:60])
                checked += 1
            got = _hits(searcher, [F.in_(field, [value, "no such tag"]), F.ne("id", "nobody")], "dense")
            assert got == {r for r, v in stored.items() if v == value}, (field, "in", value[:60])
            got = _hits(searcher, F.ne(field, value), "dense")
            assert got == {r for r, v in stored.items() if v != value}, (field, "!=", value[:60])
            if value:
                got = _hits(searcher, F.prefix(field, value), "dense")
                assert got == {r for r, v in stored.items() if v.startswith(value)}, (
                    field,
                    "prefix",
                    value[:60],
                )
            checked += 3
    return checked


@pytest.mark.server
def test_hostile_filter_values_through_the_server_engine(server_manager: Any) -> None:
    """The same values through a Milvus gRPC server (Milvus Lite's server binary here, so escaped
    literals in the Lite dialect; a Milvus >= 2.5 server gets templates, checked below)."""
    stored = _hostile_store(server_manager, "hostile")
    assert not server_manager.capabilities.filter_templates
    assert _check_hostile(server_manager, "hostile", stored) > 200


@pytest.mark.integration
def test_hostile_filter_values_through_the_searcher_on_lite(tmp_path: Path) -> None:
    """test_filters checks rendered expressions with query(); this goes through HybridSearcher in
    every mode (three engine code paths: hybrid_search, dense search, sparse search)."""
    from milvus_m3.collection.manager import CollectionManager

    with CollectionManager(str(tmp_path / "h.db")) as m:
        stored = _hostile_store(m, "hostile")
        assert _check_hostile(m, "hostile", stored) > 200


@pytest.mark.parametrize("value", HOSTILE, ids=[f"v{i}" for i in range(len(HOSTILE))])
def test_templates_carry_values_outside_the_expression(value: str) -> None:
    """What a Milvus >= 2.5 server is sent: the expression names parameters only; the values travel
    untouched beside it, whatever they hold."""
    from milvus_m3.filters import F, render

    for flt in (
        F.eq("tag", value),
        F.eq("metadata.tag", value),
        F.in_("tag", [value, "other"]),
        F.ne("tag", value),
    ):
        expr, params = render(
            flt, templates=True, dialect="server", fields={"tag": "varchar", "metadata": "json"}
        )
        assert set(params) == {"p0"}
        assert params["p0"] in (value, [value, "other"])
        assert re.fullmatch(r'(tag|metadata\["tag"\]) (==|!=|in) \{p0\}', expr), expr


# --------------------------------------------------------------------------- secrets, Python API


@pytest.mark.server
def test_searcher_and_its_errors_never_show_credentials(
    milvus_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    from milvus_m3.collection.manager import CollectionManager
    from milvus_m3.engine.connection import RetryPolicy
    from milvus_m3.errors import MilvusM3Error
    from milvus_m3.filters import F
    from milvus_m3.search import HybridSearcher
    from tests.fakes import FakeEncoder

    host = milvus_server.removeprefix("http://")
    shown: list[str] = []
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    pym = logging.getLogger("pymilvus")
    old = pym.level
    pym.addHandler(keep)
    pym.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="milvus_m3"):
            for kwargs in ({"uri": f"http://root:{SECRET}@{host}"}, {"uri": milvus_server, "token": TOKEN}):
                m = CollectionManager(
                    **kwargs, retry=RetryPolicy(attempts=2, initial_backoff=0.05, total_seconds=2)
                )  # type: ignore[arg-type]
                enc = FakeEncoder(dim=8)
                m.create_collection("sec", dense_dim=8, model_name=enc.model_name, recreate=True)
                m.upsert(
                    "sec",
                    ids=["a", "b"],
                    texts=["alpha one", "beta two"],
                    embeddings=enc.encode_documents(["alpha one", "beta two"]),
                )
                s = HybridSearcher(m, "sec", enc)
                shown += [repr(s), str(s), repr(m), repr(m.connection)]
                shown += [repr(h) for h in s.search("alpha", filter=F.eq("id", "a"))]
                for bad in ("nosuch == 1", 'id == "{x}"'):
                    with pytest.raises(MilvusM3Error) as err:
                        s.search("alpha", filter=bad)
                    cur: BaseException | None = err.value
                    seen: set[int] = set()
                    while cur is not None and id(cur) not in seen:  # pymilvus raises `e from e`: a loop
                        seen.add(id(cur))
                        shown.append(f"{cur!s} {cur!r}")
                        cur = cur.__cause__ or cur.__context__
                m.drop("sec")
                m.close()
    finally:
        pym.removeHandler(keep)
        pym.setLevel(old)
    shown += [caplog.text, "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)]
    assert any("HybridSearcher(" in s for s in shown)
    leaks = [s[:300] for s in shown if SECRET in s or TOKEN in s]
    assert not leaks, leaks


# ------------------------------------------------------------------------------- the CLI's --filter


@pytest.fixture(scope="module", autouse=True)
def cli_filter_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A collection built by the tiny model holding hostile tags, and one `milvus-m3 search --filter`
    process started in the background with the module (autouse: it loads the model for ~10 s while the
    other tests run; the test that reads it comes last)."""
    if not _selected(request, "test_cli_filter_with_an_escaped_hostile_value_returns_only_its_row"):
        yield {}
        return
    from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
    from milvus_m3.filters import F, render

    tiny_embedder: Any = request.getfixturevalue("tiny_embedder")
    d = tmp_path_factory.mktemp("cli-filter")
    db = d / "f.db"
    tags = {"good": "plain", "victim": 'a" or id != "', "other": "new\nline", "third": "{p0}"}
    texts = {k: f"shared words about {k}" for k in tags}
    with CollectionManager(str(db)) as m:
        spec = CollectionSpec(
            dense_dim=tiny_embedder.dense_dim,
            model_name=tiny_embedder.model_name,
            scalar_fields=(ScalarField(name="tag", max_length=256, default=""),),
        )
        m.create_collection("docs", spec=spec)
        ids = list(tags)
        m.upsert(
            "docs",
            ids=ids,
            texts=[texts[i] for i in ids],
            embeddings=tiny_embedder.encode_documents([texts[i] for i in ids]),
            metadata=[{"tag": tags[i]} for i in ids],
            fields={"tag": [tags[i] for i in ids]},
        )
    # The expression a user would write for the hostile value, escaped as milvus-m3 escapes it.
    expr = render(
        [F.eq("tag", tags["victim"]), F.eq("metadata.tag", tags["victim"])], templates=False, dialect="lite"
    )[0]
    copy = d / "g.db"
    import shutil

    shutil.copyfile(db, copy)  # the test process keeps f.db open (pymilvus does not release it on close)
    proc = subprocess.Popen(
        [
            *CLI,
            "search",
            "shared words",
            "--collection",
            "docs",
            "--uri",
            str(copy),
            "--model",
            str(tiny_embedder.model_dir),
            "--filter",
            expr,
            "--json",
            "--limit",
            "10",
        ],
        cwd=d,
        env=cli_env(TOKENIZERS_PARALLELISM="false"),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield {"proc": proc, "expr": expr, "expected": {"victim"}}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_cli_filter_with_an_escaped_hostile_value_returns_only_its_row(
    cli_filter_run: dict[str, Any],
) -> None:
    proc = cli_filter_run["proc"]
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    ids = {json.loads(line)["id"] for line in out.splitlines() if line.strip()}
    assert ids == cli_filter_run["expected"], (ids, cli_filter_run["expr"])


# ------------------------------------------------------------------- custom code in a checkpoint folder

_EVIL_MODULE = "import pathlib\npathlib.Path({marker!r}).touch()\n"


def _remote_code_checkpoint(src: Path, dst: Path, where: str, marker: Path) -> Path:
    """``src`` without tokenizer.json (so transformers would build the tokenizer from its config) and with
    an ``auto_map`` in ``where`` naming ``evil.py``, a module that creates ``marker`` when imported."""
    d = _link_checkpoint(src, dst, {"tokenizer.json", where, "sentencepiece.bpe.model"})
    (d / "sentencepiece.bpe.model").write_bytes(b"not a real model")
    (d / "evil.py").write_text(_EVIL_MODULE.format(marker=str(marker)), encoding="utf-8")
    base = json.loads((src / where).read_text(encoding="utf-8")) if (src / where).is_file() else {}
    base["auto_map"] = {
        "AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"],
        "AutoConfig": "evil.EvilConfig",
    }
    (d / where).write_text(json.dumps(base), encoding="utf-8")
    return d


_LOADERS = {
    "embedder": "from milvus_m3 import M3Embedder; M3Embedder(sys.argv[1], device='cpu')",
    "reranker": "from milvus_m3 import CrossEncoderReranker; CrossEncoderReranker(sys.argv[1], device='cpu')",
}


@pytest.mark.integration
@pytest.mark.parametrize("where", ["tokenizer_config.json", "config.json"])
@pytest.mark.parametrize("part", sorted(_LOADERS))
def test_a_checkpoint_folder_never_runs_its_own_code(
    part: str, where: str, tiny_checkpoint: Path, tiny_reranker_checkpoint: Path, tmp_path: Path
) -> None:
    """Issue 27 A: ``auto_map`` is refused before any loader sees the folder, even with 'y' on stdin."""
    src = tiny_checkpoint if part == "embedder" else tiny_reranker_checkpoint
    marker = tmp_path / "PWNED"
    d = _remote_code_checkpoint(src, tmp_path / "ckpt", where, marker)
    code = f"import sys\n{_LOADERS[part]}"
    run = subprocess.run(
        [sys.executable, "-c", code, str(d)],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert not marker.exists(), f"the {part} ran code from {where}"
    assert run.returncode != 0
    assert "ModelLoadError" in run.stderr and "auto_map" in run.stderr and where in run.stderr, run.stderr
    assert "Do you wish to run the custom code" not in run.stdout + run.stderr


@pytest.mark.integration
def test_cli_search_with_a_code_carrying_reranker_refuses_it(
    tiny_checkpoint: Path, tiny_reranker_checkpoint: Path, tmp_path: Path
) -> None:
    """``echo y | milvus-m3 search q --rerank DIR``: one clear error, and the payload never runs."""
    marker = tmp_path / "PWNED"
    d = _remote_code_checkpoint(tiny_reranker_checkpoint, tmp_path / "rr", "tokenizer_config.json", marker)
    db = str(tmp_path / "m.db")
    env = cli_env()
    made = subprocess.run(
        [*CLI, "create", "--uri", db, "--collection", "c", "--model", str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    run = subprocess.run(
        [
            *CLI,
            "search",
            "q",
            "--uri",
            db,
            "--collection",
            "c",
            "--model",
            str(tiny_checkpoint),
            "--rerank",
            str(d),
        ],
        input="y\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert not marker.exists()
    assert run.returncode != 0, run.stderr
    assert "auto_map" in run.stderr and "Traceback" not in run.stderr


# ------------------------------------------------ tampered and sharded checkpoints (issue 27 B, C, 11)


def _sharded_copy(src: Path, dst: Path, *, shard_names: tuple[str, str] = ("a.safetensors", "b.safetensors"),
                  nudge: float = 0.0) -> Path:  # fmt: skip
    """``src`` with its model.safetensors split in two shards and an index; ``nudge`` shifts one tensor
    (another fine-tune of the same shape)."""
    from safetensors.torch import load_file, save_file

    d = _link_checkpoint(src, dst, {"model.safetensors"})
    state = load_file(str(src / "model.safetensors"))
    keys = sorted(state)
    if nudge:
        state[keys[-1]] = state[keys[-1]] + nudge
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    weight_map = {}
    for name, part in zip(shard_names, halves, strict=True):
        target = (d / name).resolve() if "/" in name else d / name
        save_file({k: state[k].contiguous() for k in part}, str(target))
        weight_map.update(dict.fromkeys(part, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    return d


@pytest.mark.integration
def test_sharded_checkpoints_are_fingerprinted_by_their_weights(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """B: two sharded checkpoints with one index and other weights are two models, one model sharded
    twice is one."""
    from milvus_m3.embedder.checkpoint import model_fingerprint

    a = _sharded_copy(tiny_checkpoint, tmp_path / "a")
    a2 = _sharded_copy(tiny_checkpoint, tmp_path / "a2")
    b = _sharded_copy(tiny_checkpoint, tmp_path / "b", nudge=0.5)
    assert (a / "model.safetensors.index.json").read_text() == (
        b / "model.safetensors.index.json"
    ).read_text()
    assert model_fingerprint(a) == model_fingerprint(a2)
    assert model_fingerprint(a) != model_fingerprint(b)


@pytest.mark.integration
@pytest.mark.parametrize("part", ["embedder", "reranker"])
def test_a_shard_outside_the_checkpoint_folder_is_refused(
    part: str, tiny_checkpoint: Path, tiny_reranker_checkpoint: Path, tmp_path: Path
) -> None:
    """C: an index naming ``../x.safetensors`` never makes a loader read outside the folder."""
    from milvus_m3 import CrossEncoderReranker
    from milvus_m3.embedder import M3Embedder

    src = tiny_checkpoint if part == "embedder" else tiny_reranker_checkpoint
    (tmp_path / "ckpt").mkdir()
    d = _sharded_copy(
        src, tmp_path / "ckpt" / "model", shard_names=("a.safetensors", "../outside.safetensors")
    )
    assert (tmp_path / "ckpt" / "outside.safetensors").is_file()  # the payload is really there
    with pytest.raises(ModelLoadError, match=r"outside\.safetensors.*not a file name inside"):
        if part == "embedder":
            M3Embedder(d, device="cpu")
        else:
            CrossEncoderReranker(d, device="cpu")


_TAMPERED = {
    "zero-heads": ({"num_attention_heads": 0}, "num_attention_heads=0"),
    "huge-positions": ({"max_position_embeddings": 10**12}, "max_position_embeddings"),
    "heads-do-not-divide": ({"num_attention_heads": 7}, "attention heads"),
    "hidden-size-mismatch": ({"hidden_size": 64, "num_attention_heads": 4}, "do not fit"),
    "string-size": ({"hidden_size": "32"}, "hidden_size"),
}


@pytest.mark.integration
@pytest.mark.parametrize("part", ["embedder", "reranker"])
@pytest.mark.parametrize("case", sorted(_TAMPERED))
def test_tampered_configs_give_one_clear_error(
    case: str, part: str, tiny_checkpoint: Path, tiny_reranker_checkpoint: Path, tmp_path: Path
) -> None:
    """11: a tampered config.json is a ModelLoadError naming the file or the weights, never a
    ZeroDivisionError, an allocation failure or a raw size-mismatch traceback."""
    from milvus_m3 import CrossEncoderReranker
    from milvus_m3.embedder import M3Embedder

    src = tiny_checkpoint if part == "embedder" else tiny_reranker_checkpoint
    d = _link_checkpoint(src, tmp_path / "ckpt", {"config.json"})
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    changes, needle = _TAMPERED[case]
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=needle) as err:
        if part == "embedder":
            M3Embedder(d, device="cpu")
        else:
            CrossEncoderReranker(d, device="cpu")
    assert str(d) in str(err.value)
