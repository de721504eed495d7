"""M3Embedder: parity with FlagEmbedding, loading checks, overflow, input validation, chunking.

Model tests run on the tiny random checkpoint (tests/fixtures_model.py): fast, offline, and with the real
XLM-R tokenizer, so token ids, specials and lengths are realistic.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import ConfigError, InputError, ModelLoadError, TextTooLongError
from milvus_m3.types import M3Embeddings

integration = pytest.mark.integration

SPECIAL_IDS = {0, 1, 2, 3}  # <s>, <pad>, </s>, <unk>

LONG_EN = (
    "Hybrid retrieval combines a dense embedding, which captures meaning, with learned sparse weights, "
    "which keep the precision of exact term matches. "
) * 6
TEXTS = [
    "hello",
    "What is the capital of France?",
    LONG_EN,
    "Die Katze schläft auf dem Sofa, während draußen der Regen fällt.",
    "検索拡張生成は、外部の文書を使って言語モデルの回答を改善します。",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "هذا نص قصير باللغة العربية",
    "repeat repeat repeat repeat repeat repeat",
    "a literal </s> and <s> in the text, plus <pad>",
    "emoji 🙂 and rare ☃ symbols ✓",
    LONG_EN[:300],
    "x",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_checkpoint: Path) -> Any:
    """The checkpoint's tokenizer loaded the plain transformers way, as a reference."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def flag_model(tiny_checkpoint: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_checkpoint), use_fp16=False, devices="cpu")


def _flag_encode(flag_model: Any, texts: list[str], max_length: int, colbert: bool = False) -> Any:
    return flag_model.encode(
        texts,
        batch_size=256,
        max_length=max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=colbert,
    )


def _assert_same(ours: M3Embeddings, ref: Any) -> None:
    np.testing.assert_allclose(ours.dense, ref["dense_vecs"], atol=1e-5, rtol=0)
    assert len(ours.sparse) == len(ref["lexical_weights"])
    for row, (mine, theirs) in enumerate(zip(ours.sparse, ref["lexical_weights"], strict=False)):
        theirs_int = {int(k): float(v) for k, v in theirs.items()}
        assert set(mine) == set(theirs_int), f"row {row}: token id sets differ"
        for k, v in mine.items():
            assert abs(v - theirs_int[k]) <= 1e-5, (row, k, v, theirs_int[k])


def _link_checkpoint(src: Path, dst: Path, skip: frozenset[str] | set[str] = frozenset()) -> Path:
    """A copy of ``src`` made of symlinks, leaving out ``skip``."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).symlink_to(f.resolve())
    return dst


# ---------------------------------------------------------------------------------------------------
# (1) parity with FlagEmbedding


@integration
def test_documents_match_flagembedding(tiny_embedder: M3Embedder, flag_model: Any) -> None:
    ours = tiny_embedder.encode_documents(TEXTS, batch_size=4)
    _assert_same(ours, _flag_encode(flag_model, TEXTS, max_length=8192))
    assert ours.truncated == ()
    assert ours.colbert is None


@integration
def test_queries_match_flagembedding(tiny_embedder: M3Embedder, flag_model: Any) -> None:
    ours = tiny_embedder.encode_queries(TEXTS)
    _assert_same(ours, _flag_encode(flag_model, TEXTS, max_length=512))


@integration
def test_colbert_matches_flagembedding(tiny_embedder: M3Embedder, flag_model: Any) -> None:
    ours = tiny_embedder.encode_documents(TEXTS, colbert=True, batch_size=5)
    ref = _flag_encode(flag_model, TEXTS, max_length=8192, colbert=True)
    _assert_same(ours, ref)
    assert ours.colbert is not None
    for mine, theirs, count in zip(ours.colbert, ref["colbert_vecs"], ours.token_counts, strict=False):
        assert mine.dtype == np.float32
        assert mine.shape == theirs.shape == (count - 1, tiny_embedder.colbert_dim)
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=0)


@integration
def test_order_and_batching_do_not_change_results(tiny_embedder: M3Embedder) -> None:
    whole = tiny_embedder.encode_documents(TEXTS, batch_size=64)
    one_by_one = M3Embeddings.concat([tiny_embedder.encode_documents([t], batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(whole.dense, one_by_one.dense, atol=1e-5, rtol=0)
    assert [set(s) for s in whole.sparse] == [set(s) for s in one_by_one.sparse]
    assert whole.token_counts == one_by_one.token_counts


# ---------------------------------------------------------------------------------------------------
# (2) dense shape, dtype, norm; dims read from the checkpoint


@integration
def test_dense_rows_are_unit_float32(tiny_embedder: M3Embedder) -> None:
    out = tiny_embedder.encode_documents(TEXTS)
    assert out.dense.dtype == np.float32
    assert out.dense.shape == (len(TEXTS), tiny_embedder.dense_dim) == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-6)
    # The tiny model is usable for ranking: different texts give clearly different vectors.
    sims = out.dense @ out.dense.T
    assert sims[np.triu_indices(len(TEXTS), 1)].mean() < 0.95


@integration
def test_dims_are_read_from_the_checkpoint(tmp_path: Path) -> None:
    from milvus_m3.testing import build_checkpoint

    path = build_checkpoint(
        tmp_path / "h48", hidden_size=48, num_heads=3, colbert_dim=24, max_position_embeddings=514
    )
    emb = M3Embedder(path, device="cpu", document_max_length=512)
    assert (emb.dense_dim, emb.colbert_dim, emb.max_length, emb.vocab_size) == (48, 24, 512, 250002)
    out = emb.encode_documents(["one text", "another, longer text"], colbert=True)
    assert out.dense.shape == (2, 48)
    assert out.colbert is not None and out.colbert[1].shape[1] == 24
    # 8192 does not fit a checkpoint with 514 positions: refused with the limit and the fix.
    with pytest.raises(ConfigError, match=r"document_max_length=8192.*512"):
        M3Embedder(path, device="cpu")


@integration
def test_empty_list_gives_empty_embeddings(tiny_embedder: M3Embedder) -> None:
    out = tiny_embedder.encode_documents([])
    assert out.dense.shape == (0, 32) and out.dense.dtype == np.float32
    assert out.sparse == [] and len(out) == 0
    assert tiny_embedder.encode_queries([], colbert=True).colbert == []


# ---------------------------------------------------------------------------------------------------
# (3) loading refuses incomplete or corrupt checkpoints


@integration
@pytest.mark.parametrize(
    "missing",
    ["sparse_linear.pt", "colbert_linear.pt", "config.json", "tokenizer.json", "model.safetensors"],
)
def test_missing_file_is_named(tiny_checkpoint: Path, tmp_path: Path, missing: str) -> None:
    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={missing})
    with pytest.raises(ModelLoadError) as info:
        M3Embedder(path, device="cpu")
    message = str(info.value)
    assert str(path) in message
    expected = {"tokenizer.json": "tokenizer", "model.safetensors": "weights"}.get(missing, missing)
    assert expected in message
    if missing.endswith(".pt"):
        assert "RANDOM" in message


@integration
@pytest.mark.parametrize("name", ["sparse_linear.pt", "colbert_linear.pt"])
def test_truncated_head_is_named(tiny_checkpoint: Path, tmp_path: Path, name: str) -> None:
    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={name})
    data = (tiny_checkpoint / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"{name}.*corrupt"):
        M3Embedder(path, device="cpu")


@integration
def test_truncated_safetensors_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={"model.safetensors"})
    with (tiny_checkpoint / "model.safetensors").open("rb") as src:
        (path / "model.safetensors").write_bytes(src.read(1_000_000))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*(corrupt|truncated)"):
        M3Embedder(path, device="cpu")


class _Payload:
    """A pickle that would create a file when unpickled with plain pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@integration
def test_pickled_code_in_a_head_is_not_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import torch

    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={"sparse_linear.pt"})
    marker = tmp_path / "pwned"
    torch.save({"weight": _Payload(marker), "bias": torch.zeros(1)}, path / "sparse_linear.pt")
    with pytest.raises(ModelLoadError, match="sparse_linear.pt"):
        M3Embedder(path, device="cpu")
    assert not marker.exists()


@integration
def test_head_of_another_model_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import torch

    path = _link_checkpoint(tiny_checkpoint, tmp_path / "ckpt", skip={"colbert_linear.pt"})
    torch.save(torch.nn.Linear(64, 64).state_dict(), path / "colbert_linear.pt")
    with pytest.raises(ModelLoadError, match=r"colbert_linear\.pt.*hidden size 32"):
        M3Embedder(path, device="cpu")


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        M3Embedder(str(tmp_path / "nope"), device="cpu")


def test_hub_id_offline_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"download .*MILVUS_M3_MODEL"):
        M3Embedder("BAAI/bge-m3", device="cpu", local_files_only=True, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------
# (4) long texts: warn, truncate, error; never cut silently

LIMIT = 24


@pytest.fixture(scope="module")
def overflow_embedders(tiny_checkpoint: Path) -> dict[str, M3Embedder]:
    return {
        mode: M3Embedder(tiny_checkpoint, device="cpu", document_max_length=LIMIT, overflow=mode)
        for mode in ("warn", "truncate", "error")
    }


def _long_and_short(tiny_embedder: M3Embedder) -> tuple[list[str], list[int]]:
    texts = ["short one", LONG_EN, "also short", LONG_EN[:200], "Die Katze " * 30]
    counts = [c + 2 for c in tiny_embedder.count_tokens(texts)]
    long_rows = [i for i, c in enumerate(counts) if c > LIMIT]
    assert long_rows == [1, 3, 4]
    return texts, counts


@integration
def test_overflow_warn_cuts_like_flagembedding_and_warns_once(
    overflow_embedders: dict[str, M3Embedder], tiny_embedder: M3Embedder, flag_model: Any
) -> None:
    texts, counts = _long_and_short(tiny_embedder)
    with pytest.warns(UserWarning) as record:
        out = overflow_embedders["warn"].encode_documents(texts)
    ours = [w for w in record if "longer than" in str(w.message)]
    assert len(ours) == 1
    assert "3 of 5" in str(ours[0].message) and "--chunk-tokens" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller
    assert out.truncated == (1, 3, 4)
    assert out.token_counts == tuple(min(c, LIMIT) for c in counts)
    _assert_same(out, _flag_encode(flag_model, texts, max_length=LIMIT))


@integration
def test_overflow_truncate_cuts_quietly_but_records(
    overflow_embedders: dict[str, M3Embedder], tiny_embedder: M3Embedder, flag_model: Any
) -> None:
    texts, _ = _long_and_short(tiny_embedder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = overflow_embedders["truncate"].encode_documents(texts, colbert=True)
    assert out.truncated == (1, 3, 4)
    ref = _flag_encode(flag_model, texts, max_length=LIMIT, colbert=True)
    _assert_same(out, ref)
    assert out.colbert is not None
    assert [c.shape for c in out.colbert] == [c.shape for c in ref["colbert_vecs"]]


@integration
def test_overflow_error_names_row_count_limit_and_fix(
    overflow_embedders: dict[str, M3Embedder], tiny_embedder: M3Embedder
) -> None:
    texts, counts = _long_and_short(tiny_embedder)
    with pytest.raises(TextTooLongError) as info:
        overflow_embedders["error"].encode_documents(texts)
    message = str(info.value)
    assert info.value.row == 1 and info.value.field == "text"
    for part in ("row 1", f"{counts[1]} tokens", str(LIMIT), "document_max_length", "--chunk-tokens"):
        assert part in message
    # Queries have their own limit (512 here): the same texts pass.
    assert overflow_embedders["error"].encode_queries(texts).truncated == ()


@integration
def test_per_call_max_length(tiny_embedder: M3Embedder) -> None:
    with pytest.warns(UserWarning, match="1 of 1"):
        out = tiny_embedder.encode_documents([LONG_EN], max_length=10)
    assert out.token_counts == (10,) and out.truncated == (0,)
    with pytest.raises(ConfigError, match="max_length"):
        tiny_embedder.encode_documents(["x"], max_length=9000)
    with pytest.raises(ConfigError, match="max_length"):
        tiny_embedder.encode_documents(["x"], max_length=2)


# ---------------------------------------------------------------------------------------------------
# (5) bad inputs


@integration
@pytest.mark.parametrize(
    ("texts", "row"),
    [([None], 0), (["ok", 3], 1), (["ok", "fine", ""], 2), (["ok", "   \n\t"], 1), ([b"bytes"], 0)],
)
def test_bad_rows_name_the_row(tiny_embedder: M3Embedder, texts: list[Any], row: int) -> None:
    for encode in (tiny_embedder.encode_documents, tiny_embedder.encode_queries):
        with pytest.raises(InputError, match=rf"row {row}\b") as info:
            encode(texts)
        assert info.value.row == row and info.value.field == "text"


@integration
def test_a_bare_string_is_refused(tiny_embedder: M3Embedder) -> None:
    with pytest.raises(InputError, match=r"list"):
        tiny_embedder.encode_documents("a single text")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"sequence"):
        tiny_embedder.encode_queries(t for t in ["a generator"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# (6) importing the module is light


def test_import_does_not_load_torch_or_flagembedding() -> None:
    code = (
        "import sys, milvus_m3.embedder, milvus_m3.testing; "
        "print(','.join(m for m in ('torch', 'FlagEmbedding', 'transformers', 'huggingface_hub') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------------
# (7) sparse vectors are Milvus-ready


@integration
def test_sparse_keys_are_int_values_positive_float_no_specials(
    tiny_embedder: M3Embedder, hf_tokenizer: Any
) -> None:
    out = tiny_embedder.encode_documents(TEXTS)
    total = 0
    for vec in out.sparse:
        for k, v in vec.items():
            assert type(k) is int and type(v) is float
            assert v > 0 and 0 <= k < tiny_embedder.vocab_size
            assert k not in SPECIAL_IDS
        total += len(vec)
    # The tiny model's sparse head keeps a fair share of tokens, so sparse search is not degenerate.
    distinct = sum(len(set(ids) - SPECIAL_IDS) for ids in _token_ids(hf_tokenizer, TEXTS))
    assert 0.2 < total / distinct < 0.9


def _token_ids(tok: Any, texts: list[str]) -> list[list[int]]:
    ids: list[list[int]] = tok(texts)["input_ids"]
    return ids


# ---------------------------------------------------------------------------------------------------
# (8) options


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp8"}, "precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"query_max_length": 2}, "query_max_length"),
        ({"document_max_length": "long"}, "document_max_length"),
        ({"overflow": "drop"}, "overflow"),
        ({"colbert": "yes"}, "colbert"),
        ({"show_progress": 1}, "show_progress"),
        ({"local_files_only": "no"}, "local_files_only"),
        ({"device": 0}, "device"),
        ({"device": "tpu-ish"}, "device"),
        ({"device": "cpu", "precision": "fp16"}, "fp32"),
        ({"device": "cpu", "precision": "bf16"}, "fp32"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    # Options are checked before anything is loaded: a missing directory is never reached.
    with pytest.raises(ConfigError, match=match):
        M3Embedder(str(tmp_path / "never-read"), **kwargs)


def test_cuda_without_cuda_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match=r"CUDA is not available.*device='cpu'"):
        M3Embedder(str(tmp_path / "never-read"), device="cuda")


@integration
def test_resolved_device_and_precision(tiny_embedder: M3Embedder, tiny_checkpoint: Path) -> None:
    assert tiny_embedder.device == "cpu" and tiny_embedder.precision == "fp32"
    assert tiny_embedder.model_name == str(tiny_checkpoint)
    assert tiny_embedder.max_length == 8192


def test_auto_device_and_precision() -> None:
    import torch

    from milvus_m3.embedder.torch_common import resolve_device as _resolve_device
    from milvus_m3.embedder.torch_common import resolve_precision as _resolve_precision

    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert _resolve_device(None) == expected  # one device, never all GPUs
    assert _resolve_precision("auto", "cpu") == "fp32"
    assert _resolve_precision("auto", "cuda:0") == "fp16"
    assert _resolve_precision("bf16", "cuda:1") == "bf16"


@integration
def test_encode_options_are_checked(tiny_embedder: M3Embedder) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        tiny_embedder.encode_documents(["x"], batch_size=0)
    with pytest.raises(ConfigError, match="colbert"):
        tiny_embedder.encode_queries(["x"], colbert=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# (9) token counts and chunk spans

CHUNK_TEXT = (
    LONG_EN
    + " Die Katze schläft auf dem Sofa, während draußen der Regen fällt. "
    + "検索拡張生成は、外部の文書を使って言語モデルの回答を改善します。" * 3
    + " Пример текста на русском языке для проверки разбиения на части. "
)


@pytest.fixture(scope="module")
def chunk_offsets(hf_tokenizer: Any) -> list[tuple[int, int]]:
    enc = hf_tokenizer(CHUNK_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    return [(int(s), int(e)) for s, e in enc["offset_mapping"]]


@integration
def test_count_tokens_matches_the_encoder(tiny_embedder: M3Embedder, hf_tokenizer: Any) -> None:
    counts = tiny_embedder.count_tokens(TEXTS)
    assert counts == [len(ids) - 2 for ids in _token_ids(hf_tokenizer, TEXTS)]
    assert tiny_embedder.encode_documents(TEXTS).token_counts == tuple(c + 2 for c in counts)
    assert tiny_embedder.count_tokens([""]) == [0]
    with pytest.raises(InputError, match="list"):
        tiny_embedder.count_tokens("text")  # type: ignore[arg-type]


def _check_spans(
    emb: M3Embedder, text: str, offsets: list[tuple[int, int]], max_tokens: int, overlap: int
) -> None:
    spans = emb.chunk_spans(text, max_tokens, overlap)
    assert spans, "a non-empty text gives at least one span"
    windows = []
    for start, end in spans:
        assert 0 <= start < end <= len(text)
        assert emb.count_tokens([text[start:end]])[0] <= max_tokens
        inside = [i for i, (s, e) in enumerate(offsets) if start <= s and e <= end and e > s]
        windows.append(inside)
        assert len(inside) <= max_tokens
    covered = set().union(*map(set, windows))
    assert covered >= {i for i, (s, e) in enumerate(offsets) if text[s:e].strip()}
    in_a_span = np.zeros(len(text), dtype=bool)
    for start, end in spans:
        in_a_span[start:end] = True
    assert all(in_a_span[i] for i, ch in enumerate(text) if not ch.isspace())
    assert spans == sorted(spans)
    for a, b in itertools.pairwise(windows):
        # ``overlap`` tokens shared, unless a shortened window forces a step of one token
        assert len(set(a) & set(b)) == min(overlap, len(a) - 1)


@integration
@pytest.mark.parametrize(("max_tokens", "overlap"), [(16, 0), (16, 4), (50, 10), (1000, 0), (7, 6)])
def test_chunk_spans_cover_with_overlap(
    tiny_embedder: M3Embedder, chunk_offsets: list[tuple[int, int]], max_tokens: int, overlap: int
) -> None:
    _check_spans(tiny_embedder, CHUNK_TEXT, chunk_offsets, max_tokens, overlap)


@integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_tokens=st.integers(2, 80), data=st.data())
def test_chunk_spans_property(
    tiny_embedder: M3Embedder, chunk_offsets: list[tuple[int, int]], max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    _check_spans(tiny_embedder, CHUNK_TEXT, chunk_offsets, max_tokens, overlap)


@integration
def test_chunk_spans_edges_and_arguments(tiny_embedder: M3Embedder) -> None:
    assert tiny_embedder.chunk_spans("", 10, 2) == []
    assert tiny_embedder.chunk_spans("   ", 10) == []
    assert tiny_embedder.chunk_spans("short text", 100) == [(0, 10)]
    with pytest.raises(ConfigError, match="overlap"):
        tiny_embedder.chunk_spans("text", 4, 4)
    with pytest.raises(ConfigError, match="max_tokens"):
        tiny_embedder.chunk_spans("text", 0)
    with pytest.raises(InputError):
        tiny_embedder.chunk_spans(None, 4)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# the checkpoint builder


def test_testing_main_writes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from milvus_m3.testing import main

    assert main([str(tmp_path / "ck"), "--seed", "3"]) == 0  # python -m milvus_m3.testing OUT_DIR
    assert capsys.readouterr().out.strip() == str(tmp_path / "ck")
    names = {p.name for p in (tmp_path / "ck").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "colbert_linear.pt",
        "sparse_linear.pt",
    } <= names
    assert main([str(tmp_path / "bad"), "--tokenizer-file", str(tmp_path / "absent.json")]) == 2


def test_missing_tokenizer_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from milvus_m3.testing import build_checkpoint

    monkeypatch.setenv("MILVUS_M3_TOKENIZER_FILE", str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="MILVUS_M3_TOKENIZER_FILE"):
        build_checkpoint(tmp_path / "ck")


# ---------------------------------------------------------------------------------------------------
# batch planning (no model)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(3, 3000), max_size=300),
    batch_size=st.integers(1, 64),
)
def test_batches_cover_in_order_and_respect_batch_size(lengths: list[int], batch_size: int) -> None:
    from milvus_m3.embedder.batching import plan_batches as _plan_batches

    sorted_lengths = np.array(sorted(lengths, reverse=True), dtype=np.int64)
    batches = _plan_batches(sorted_lengths, batch_size)
    assert [i for a, b in batches for i in range(a, b)] == list(range(len(lengths)))
    assert all(0 < b - a <= batch_size for a, b in batches)


def test_batches_keep_short_texts_together_and_split_long_mixed_ones() -> None:
    from milvus_m3.embedder.batching import plan_batches as _plan_batches

    queries = np.array([30] * 5 + [10] * 40, dtype=np.int64)
    assert _plan_batches(queries, 16) == [(0, 16), (16, 32), (32, 45)]
    docs = np.array([1000, 800, 400, 399, 398, 20], dtype=np.int64)
    assert _plan_batches(docs, 16) == [(0, 1), (1, 2), (2, 5), (5, 6)]


@integration
def test_lone_surrogate_names_the_row(tiny_embedder: M3Embedder) -> None:
    with pytest.raises(InputError, match=r"row 1 is not valid UTF-8.*encoding") as info:
        tiny_embedder.encode_documents(["ok", "bad \udcff byte"])
    assert info.value.row == 1
    with pytest.raises(InputError, match="UTF-8"):
        tiny_embedder.chunk_spans("bad \ud800", 4)


@pytest.mark.integration
def test_concurrent_calls_take_turns_and_match_serial(tiny_embedder: Any) -> None:
    import concurrent.futures

    texts = [f"thread safety check number {i} with some words" for i in range(6)]
    serial = tiny_embedder.encode_documents(texts)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(tiny_embedder.encode_documents, [t]) for t in texts]
        futures += [pool.submit(tiny_embedder.count_tokens, texts) for _ in range(2)]
        results = [f.result() for f in futures]
    for i, res in enumerate(results[:6]):
        np.testing.assert_allclose(res.dense[0], serial.dense[i], atol=1e-5)
        assert res.sparse[0].keys() == serial.sparse[i].keys()


@pytest.mark.integration
def test_m3_embedder_declares_its_abilities(tiny_embedder: M3Embedder) -> None:
    from milvus_m3.types import ChunkingEncoder, ColbertEncoder, Encoder, LengthLimited

    for ability in (Encoder, LengthLimited, ChunkingEncoder, ColbertEncoder):
        assert isinstance(tiny_embedder, ability), ability.__name__
    assert tiny_embedder.colbert_dim > 0 and tiny_embedder.document_max_length >= 3
