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

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
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
    from milvus_m3.embedder import M3Embedder

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


@pytest.fixture(scope="module", autouse=True)
def closed_port_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[list[str], subprocess.Popen[str]]]]:
    """CLI commands against a port nothing listens on, started at once in the background: each one
    retries with backoff for ~20 s before it gives up, so they start with the module (autouse) and run
    while the other tests do; the test that reads them comes last."""
    from tests.fixtures_server import free_port

    port = free_port()
    cwd = tmp_path_factory.mktemp("cli-secrets")
    runs = [
        (["info", "--uri", f"http://alice:{SECRET}@127.0.0.1:{port}", "-v"], {}),
        (["info", "--collection", "docs", "--uri", f"http://127.0.0.1:{port}", "--token", f"root:{SECRET}"], {}),
        (["search", "q", "--collection", "docs", "--uri", f"https://127.0.0.1:{port}", "-v"],
         {"MILVUS_TOKEN": TOKEN}),
    ]
    procs = [
        (args, subprocess.Popen(CLI + args, cwd=cwd, env=cli_env(**extra), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
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
        p = subprocess.run(CLI + args, cwd=tmp_path, env=cli_env(), text=True, capture_output=True, timeout=120)
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        _no_secret(p.stdout, p.stderr)
        if "no_such" in args:
            assert p.returncode != 0 and "no_such" in p.stderr
        else:
            assert p.returncode == 0, p.stderr[-2000:]
            assert host in p.stdout  # the server is named, without its credentials
