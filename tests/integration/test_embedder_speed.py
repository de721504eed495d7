"""M3Embedder's speed options on the tiny checkpoint: the transformers backend (no FlagEmbedding import)
against FlagEmbedding, threads, token budgets, out-of-memory backoff, worker processes per device, int8.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import ConfigError
from milvus_m3.types import M3Embeddings

from .test_embedder import LONG_EN, TEXTS, _assert_same, _flag_encode, _link_checkpoint

integration = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def flag_model(tiny_checkpoint: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_checkpoint), use_fp16=False, devices="cpu")


def _same_outputs(a: M3Embeddings, b: M3Embeddings, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(a.dense, b.dense, atol=atol, rtol=0)
    assert len(a.sparse) == len(b.sparse)
    for mine, theirs in zip(a.sparse, b.sparse, strict=True):
        assert mine.keys() == theirs.keys()
        for k, v in mine.items():
            assert abs(v - theirs[k]) <= atol
    assert (a.colbert is None) == (b.colbert is None)
    if a.colbert is not None and b.colbert is not None:
        for x, y in zip(a.colbert, b.colbert, strict=True):
            np.testing.assert_allclose(x, y, atol=atol, rtol=0)
    assert a.token_counts == b.token_counts


# ---------------------------------------------------------------------------------------------------
# the default backend: transformers + torch.load heads; FlagEmbedding is the reference


@integration
def test_default_backend_is_transformers_and_matches_flagembedding(
    tiny_embedder: M3Embedder, flag_model: Any
) -> None:
    assert type(tiny_embedder._backend).__name__ == "HFBackend"
    ours = tiny_embedder.encode_documents(TEXTS, colbert=True, batch_size=3)
    ref = _flag_encode(flag_model, TEXTS, max_length=8192, colbert=True)
    _assert_same(ours, ref)
    assert ours.colbert is not None
    for mine, theirs in zip(ours.colbert, ref["colbert_vecs"], strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=0)


@integration
def test_flagembedding_backend_gives_the_same_outputs(
    tiny_checkpoint: Path, tiny_embedder: M3Embedder
) -> None:
    flag = M3Embedder(tiny_checkpoint, device="cpu", backend="flagembedding")
    assert type(flag._backend).__name__ == "FlagBackend"
    assert (flag.dense_dim, flag.colbert_dim, flag.max_length, flag.vocab_size) == (
        tiny_embedder.dense_dim,
        tiny_embedder.colbert_dim,
        tiny_embedder.max_length,
        tiny_embedder.vocab_size,
    )
    _same_outputs(
        flag.encode_documents(TEXTS, colbert=True), tiny_embedder.encode_documents(TEXTS, colbert=True), 1e-5
    )
    assert flag.chunk_spans(LONG_EN, 16, 4) == tiny_embedder.chunk_spans(LONG_EN, 16, 4)


@integration
def test_tokenizer_ids_and_offsets_equal_transformers(
    tiny_embedder: M3Embedder, tiny_checkpoint: Path
) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    backend = tiny_embedder._backend
    for special in (True, False):
        assert (
            backend.token_ids(TEXTS, special_tokens=special)
            == hf(TEXTS, add_special_tokens=special)["input_ids"]
        )
    for text in TEXTS:
        enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        assert backend.offsets(text) == [tuple(o) for o in enc["offset_mapping"]]


@integration
@pytest.mark.parametrize("missing", ["sparse_linear.pt", "colbert_linear.pt"])
@pytest.mark.parametrize("backend", ["transformers", "flagembedding"])
def test_both_backends_refuse_missing_heads(
    tiny_checkpoint: Path, tmp_path: Path, missing: str, backend: str
) -> None:
    from milvus_m3.errors import ModelLoadError

    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={missing})
    with pytest.raises(ModelLoadError, match=rf"{missing}.*RANDOM"):
        M3Embedder(path, device="cpu", backend=backend)


@integration
def test_loading_imports_no_flagembedding_and_logs_no_mistral_note(tiny_checkpoint: Path) -> None:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING); "
        "from milvus_m3.embedder import M3Embedder; "
        f"e = M3Embedder({str(tiny_checkpoint)!r}, device='cpu'); e.encode_queries(['hello']); "
        "print('FlagEmbedding' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False"]
    assert "regex pattern" not in out.stderr, out.stderr


@integration
def test_flag_backend_drops_only_the_mistral_note(tiny_checkpoint: Path) -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING); "
        "from milvus_m3.embedder import M3Embedder; "
        f"M3Embedder({str(tiny_checkpoint)!r}, device='cpu', backend='flagembedding'); "
        "logging.getLogger('transformers.tokenization_utils_base').warning('another tokenizer warning')"
    )
    # The CLI's main(), run in-process by other tests, sets TRANSFORMERS_VERBOSITY=error in this
    # process's environment; the child must log at transformers' own default level to show the record.
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO, env=env
    )
    assert "regex pattern" not in out.stderr
    assert "another tokenizer warning" in out.stderr  # the filter is gone after loading


# ---------------------------------------------------------------------------------------------------
# threads


@integration
def test_threads_option_sets_torch_threads(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from milvus_m3.embedder.backend import default_threads

    before = torch.get_num_threads()
    try:
        emb = M3Embedder(tiny_checkpoint, device="cpu", threads=2)
        assert emb.threads == 2 and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        import os

        assert default_threads() == len(os.sched_getaffinity(0))
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert default_threads() == 3
        assert M3Embedder(tiny_checkpoint, device="cpu").threads == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threads": 0}, "threads"),
        ({"threads": "4"}, "threads"),
        ({"max_batch_tokens": 0}, "max_batch_tokens"),
        ({"devices": "cuda:0"}, "devices"),
        ({"devices": []}, "devices"),
        ({"devices": ["cpu"], "device": "cpu"}, "not both"),
        ({"backend": "onnx"}, "backend"),
        ({"device": "cpu", "precision": "int8", "backend": "flagembedding"}, "int8"),
    ],
)
def test_bad_speed_options_are_config_errors(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        M3Embedder(str(tmp_path / "never-read"), **kwargs)


# ---------------------------------------------------------------------------------------------------
# token budgets and out-of-memory backoff


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(3, 3000), max_size=200),
    batch_size=st.integers(1, 64),
    budget=st.integers(1, 20000),
)
def test_batches_respect_the_token_budget(lengths: list[int], batch_size: int, budget: int) -> None:
    from milvus_m3.embedder.batching import plan_batches

    sorted_lengths = np.array(sorted(lengths, reverse=True), dtype=np.int64)
    batches = plan_batches(sorted_lengths, batch_size, budget)
    assert [i for a, b in batches for i in range(a, b)] == list(range(len(lengths)))
    for a, b in batches:
        assert 0 < b - a <= batch_size
        assert b - a == 1 or sorted_lengths[a] * (b - a) <= budget  # a text over the budget runs alone


@integration
def test_token_budget_does_not_change_outputs(tiny_checkpoint: Path, tiny_embedder: M3Embedder) -> None:
    budget = M3Embedder(tiny_checkpoint, device="cpu", max_batch_tokens=64)
    _same_outputs(
        budget.encode_documents(TEXTS, colbert=True), tiny_embedder.encode_documents(TEXTS, colbert=True)
    )


class _OomAbove:
    """Wraps a backend's forward: batches of more than ``rows`` texts raise torch's OOM error."""

    def __init__(self, forward: Any, rows: int) -> None:
        self.forward, self.rows, self.calls = forward, rows, []

    def __call__(self, input_ids: Any, attention_mask: Any, *, colbert: bool) -> Any:
        import torch

        self.calls.append(tuple(input_ids.shape))
        if input_ids.shape[0] > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return self.forward(input_ids, attention_mask, colbert=colbert)


@integration
def test_out_of_memory_splits_the_batch_logs_and_gives_equal_outputs(
    tiny_checkpoint: Path, tiny_embedder: M3Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    emb = M3Embedder(tiny_checkpoint, device="cpu")
    oom = _OomAbove(emb._backend.forward, rows=2)
    emb._backend.forward = oom  # type: ignore[method-assign]
    texts = [f"text number {i} about retrieval" for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="milvus_m3"):
        out = emb.encode_documents(texts, batch_size=12, colbert=True)
    _same_outputs(out, tiny_embedder.encode_documents(texts, colbert=True))
    warned = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert warned and "batch of 12 texts" in warned[0] and "6 and 6" in warned[0]
    # 12 -> 6 + 6 -> 3 + 3 -> 1 + 2 fail once each; the second 6 and 3 are split before they run
    # (known not to fit): one failure per size, never a loop.
    assert [rows for rows, _ in oom.calls if rows > 2] == [12, 6, 3] and len(warned) == 3


@integration
def test_out_of_memory_on_one_text_is_raised_not_looped(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    emb = M3Embedder(tiny_checkpoint, device="cpu")
    oom = _OomAbove(emb._backend.forward, rows=0)
    emb._backend.forward = oom  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="milvus_m3"), pytest.raises(torch.OutOfMemoryError):
        emb.encode_documents(["one", "two", "three"], batch_size=3)
    assert [rows for rows, _ in oom.calls] == [3, 1]  # 3 -> 1 + 2: the single text fails, raised
    assert "nothing left to split" in caplog.records[-1].getMessage()


@integration
def test_other_errors_are_not_retried(tiny_checkpoint: Path) -> None:
    emb = M3Embedder(tiny_checkpoint, device="cpu")
    calls: list[int] = []

    def broken(input_ids: Any, attention_mask: Any, *, colbert: bool) -> Any:
        calls.append(1)
        raise RuntimeError("shape mismatch")

    emb._backend.forward = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        emb.encode_documents(["a", "b", "c"])
    assert calls == [1]


# ---------------------------------------------------------------------------------------------------
# one worker process per device


def test_shares_are_contiguous_and_balanced() -> None:
    from milvus_m3.embedder.multi_device import split_by_tokens

    assert split_by_tokens([10] * 8, 2) == [(0, 4), (4, 8)]
    assert split_by_tokens([100, 1, 1, 1], 2) == [(0, 1), (1, 4)]
    assert split_by_tokens([5], 3) == [(0, 1)]
    for lengths in ([3, 9, 27, 1, 1, 5], [1] * 7, [50, 50]):
        for parts in (1, 2, 3, 4):
            bounds = split_by_tokens(lengths, parts)
            assert [i for a, b in bounds for i in range(a, b)] == list(range(len(lengths)))
            assert all(b > a for a, b in bounds) and len(bounds) == min(parts, len(lengths))


@integration
def test_two_cpu_worker_processes_equal_one_process(tiny_checkpoint: Path, tiny_embedder: M3Embedder) -> None:
    texts = [*TEXTS, *(f"document {i}: {LONG_EN[: 40 * i]}" for i in range(1, 9))]
    with M3Embedder(tiny_checkpoint, devices=["cpu", "cpu"], threads=1, batch_size=4) as multi:
        assert multi.devices == ("cpu", "cpu") and multi.device == "cpu,cpu"
        assert multi.dense_dim == tiny_embedder.dense_dim and multi.precision == "fp32"
        _same_outputs(
            multi.encode_documents(texts, colbert=True), tiny_embedder.encode_documents(texts, colbert=True)
        )
        _same_outputs(multi.encode_queries(["one query"]), tiny_embedder.encode_queries(["one query"]))
        assert multi.chunk_spans(LONG_EN, 16) == tiny_embedder.chunk_spans(LONG_EN, 16)
    with pytest.raises(ConfigError, match="closed"):
        multi.encode_documents(["after close"])
    multi.close()  # twice is fine


@integration
def test_a_worker_that_cannot_load_says_why(tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        M3Embedder(tiny_checkpoint, devices=["cpu", "cuda:0"], threads=1)


# ---------------------------------------------------------------------------------------------------
# the plain-torch XLM-R encoder against transformers' XLMRobertaModel


@integration
@pytest.mark.parametrize(
    "shape",
    [
        {},
        {
            "num_layers": 3,
            "hidden_size": 48,
            "num_heads": 4,
            "intermediate_size": 96,
            "initializer_range": 0.02,
        },
    ],
)
def test_torch_encoder_equals_xlm_roberta_model(tmp_path: Path, shape: dict[str, Any]) -> None:
    import json

    import torch
    from transformers import XLMRobertaModel

    from milvus_m3.embedder.xlmr import load_encoder
    from milvus_m3.testing import build_checkpoint

    path = build_checkpoint(tmp_path / "ck", max_position_embeddings=514, seed=7, **shape)
    config = json.loads((path / "config.json").read_text())
    ours = load_encoder(path, config, torch.float32)
    assert ours is not None
    ref = XLMRobertaModel.from_pretrained(str(path)).eval()
    ids = torch.tensor([[0, 35378, 8999, 38, 2, 1, 1], [0, 1, 903, 83, 10, 9, 2]])  # padding; a literal <pad>
    for mask in (ids.ne(1).long(), torch.tensor([[1] * 5 + [0] * 2, [1] * 7])):
        with torch.inference_mode():
            expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
            got = ours(ids, mask)
        keep = mask.bool()
        torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0)
    with torch.inference_mode():
        full = ids[:, :5].clone()
        full[1] = torch.tensor([0, 903, 83, 10, 2])
        ones = torch.ones_like(full)
        torch.testing.assert_close(
            ours(full, ones), ref(input_ids=full, attention_mask=ones)[0], atol=1e-5, rtol=0
        )


def test_other_architectures_go_through_transformers() -> None:
    from milvus_m3.embedder.xlmr import supported

    base = {"model_type": "xlm-roberta", "hidden_size": 32, "num_attention_heads": 2}
    assert supported(base)
    for change in (
        {"model_type": "bert"},
        {"hidden_act": "gelu_new"},
        {"position_embedding_type": "relative_key"},
        {"is_decoder": True},
    ):
        assert not supported({**base, **change})


@integration
def test_pytorch_bin_checkpoint_loads_through_transformers_with_equal_outputs(
    tiny_checkpoint: Path, tiny_embedder: M3Embedder, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    assert tiny_embedder._backend.encoder_kind == "torch"
    path = _link_checkpoint(tiny_checkpoint, tmp_path / "bin", skip={"model.safetensors"})
    torch.save(load_file(str(tiny_checkpoint / "model.safetensors")), path / "pytorch_model.bin")
    emb = M3Embedder(path, device="cpu")
    assert emb._backend.encoder_kind == "transformers"
    _same_outputs(
        emb.encode_documents(TEXTS, colbert=True), tiny_embedder.encode_documents(TEXTS, colbert=True)
    )


@integration
def test_cli_threads_flag_reaches_the_embedder(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import json as _json
    import os

    docs = tmp_path / "d.jsonl"
    docs.write_text(_json.dumps({"id": "1", "text": "threads flag"}) + "\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "milvus_m3"]
    common = ["--collection", "t", "--uri", str(tmp_path / "t.db"), "--model", str(tiny_checkpoint)]
    out = subprocess.run(
        [*base, "ingest", str(docs), *common, "--threads", "2", "-v"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert "(fp32, 2 CPU threads)" in out.stderr
    out = subprocess.run(
        [*base, "search", "threads", *common, "--threads", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert out.returncode == 2 and "--threads" in out.stderr


# ---------------------------------------------------------------------------------------------------
# int8 on CPU


@integration
def test_int8_quantises_the_linear_layers_and_stays_close(
    tiny_checkpoint: Path, tiny_embedder: M3Embedder
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's quantisation deprecation notes stay inside the loader
        emb = M3Embedder(tiny_checkpoint, device="cpu", precision="int8")
        out = emb.encode_documents(TEXTS, colbert=True)
    assert emb.precision == "int8"
    import torch

    kinds = {type(m) for m in emb._backend._modules.modules()}
    assert torch.ao.nn.quantized.dynamic.Linear in kinds and torch.nn.Linear not in kinds
    # one weight scale per output channel (per-tensor scales cost 0.018 nDCG@10 on SciFact: bench_int8_scifact)
    qlinears = [
        m for m in emb._backend._modules.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert {m.weight().qscheme() for m in qlinears} == {torch.per_channel_affine}
    ref = tiny_embedder.encode_documents(TEXTS, colbert=True)
    assert out.dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
    assert float((out.dense * ref.dense).sum(axis=1).min()) > 0.99
    assert out.colbert is not None and ref.colbert is not None
    assert [c.shape for c in out.colbert] == [c.shape for c in ref.colbert]
    kept = [
        len(set(sorted(a, key=a.__getitem__)[-10:]) & set(sorted(b, key=b.__getitem__)[-10:]))
        / min(10, len(b))
        for a, b in zip(out.sparse, ref.sparse, strict=True)
        if b
    ]
    assert float(np.mean(kept)) > 0.8
    assert out.token_counts == ref.token_counts


def test_int8_is_cpu_only(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CPU only"):
            M3Embedder(str(tmp_path / "never-read"), device="cuda", precision="int8")
    from milvus_m3.embedder.torch_common import resolve_precision

    with pytest.raises(ConfigError, match="CPU only"):
        resolve_precision("int8", "cuda:0")
