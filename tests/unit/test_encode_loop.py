"""The backend-neutral encode loop (``milvus_m3.embedder.loop``) driven by a fake numpy forward pass:
no torch, no model. Sparse reduction, ColBERT rows and dense normalisation against hand-computed values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milvus_m3.embedder.loop import EncodeLoop, ForwardOutput, IntArray, TokenizerInfo

ROOT = Path(__file__).resolve().parents[2]

# XLM-R's special ids: <s>=0, <pad>=1, </s>=2, <unk>=3.
CLS, PAD, EOS, UNK = 0, 1, 2, 3
VOCAB = 100


class _FakeTokenizer:
    """What ``TokenizerInfo`` asks of a Rust tokenizer: the special tokens' ids."""

    ids = {"<s>": CLS, "<pad>": PAD, "</s>": EOS, "<unk>": UNK}

    def no_truncation(self) -> None: ...

    def no_padding(self) -> None: ...

    def token_to_id(self, token: str) -> int | None:
        return self.ids.get(token)


class _FakeLoop(EncodeLoop):
    """Dense = (sum of the ids, 3), sparse weight = a table per token id, ColBERT = (id, 1) per token."""

    def __init__(self, tmp: Path, *, colbert_every_token: bool = False) -> None:
        config = {"max_position_embeddings": 514, "model_type": "xlm-roberta", "pad_token_id": PAD}
        super().__init__(
            TokenizerInfo(_FakeTokenizer(), tmp, config),
            model_dir=tmp,
            device="cpu",
            precision="fp32",
            dense_dim=2,
            colbert_dim=2,
            vocab_size=VOCAB,
            max_batch_tokens=None,
        )
        self.colbert_every_token = colbert_every_token
        self.batches: list[tuple[IntArray, IntArray]] = []

    def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
        assert input_ids.dtype == np.int64 and attention_mask.dtype == np.int64
        self.batches.append((input_ids.copy(), attention_mask.copy()))
        dense = np.stack([(input_ids * attention_mask).sum(axis=1), np.full(len(input_ids), 3)], axis=1)
        dense = dense.astype(np.float16)  # any float dtype: the loop casts
        # weight of a token = id / 10, but token 7 weighs 0 and token 8 weighs -1 (relu not applied:
        # the loop must drop weights <= 0 anyway); padding positions get a large weight the mask drops.
        weights = (input_ids / 10.0).astype(np.float32)
        weights[input_ids == 7] = 0.0
        weights[input_ids == 8] = -1.0
        weights[attention_mask == 0] = 99.0
        vecs = None
        if colbert:
            per_token = np.stack([input_ids, np.ones_like(input_ids)], axis=-1).astype(np.float32)
            per_token[attention_mask == 0] = 5.0  # padding rows: any value
            vecs = per_token if self.colbert_every_token else per_token[:, 1:]
        return ForwardOutput(dense, weights[:, :, None], vecs)


def _unit(v: list[float]) -> list[float]:
    n = float(np.sqrt(sum(x * x for x in v)))
    return [x / n for x in v]


IDS = [
    [CLS, 10, 20, 10, 7, EOS],  # 10 twice: max weight kept; 7 weighs 0: dropped
    [CLS, 30, 8, EOS],  # 8 weighs -1: dropped
    [CLS, UNK, 40, EOS, PAD],  # <unk> and a literal pad id inside the text: special, dropped
]


@pytest.mark.parametrize("every_token", [False, True])
def test_the_loop_reduces_sparse_masks_colbert_and_normalises_dense(
    tmp_path: Path, every_token: bool
) -> None:
    loop = _FakeLoop(tmp_path, colbert_every_token=every_token)
    dense, sparse, colbert = loop.encode(IDS, batch_size=8, colbert=True, show_progress=False)

    # one batch, longest first, padded on the right with the pad id and masked
    ((ids, mask),) = loop.batches
    assert ids.tolist() == [IDS[0], [CLS, UNK, 40, EOS, PAD, PAD], [CLS, 30, 8, EOS, PAD, PAD]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]

    assert sparse == [
        {10: pytest.approx(1.0), 20: pytest.approx(2.0)},
        {30: pytest.approx(3.0)},
        {40: pytest.approx(4.0)},
    ]
    assert all(type(k) is int and type(v) is float for row in sparse for k, v in row.items())

    assert dense.dtype == np.float32 and dense.shape == (3, 2)
    expected_dense = [_unit([49.0, 3.0]), _unit([40.0, 3.0]), _unit([46.0, 3.0])]
    np.testing.assert_allclose(dense, expected_dense, rtol=1e-6)

    assert colbert is not None
    # [CLS] and padding dropped: tokens - 1 rows per text (</s> kept, as FlagEmbedding keeps it), unit rows
    assert [c.shape for c in colbert] == [(5, 2), (3, 2), (4, 2)]
    for vecs, ids_of_text in zip(colbert, IDS, strict=True):
        assert vecs.dtype == np.float32 and vecs.flags.c_contiguous
        np.testing.assert_allclose(vecs, [_unit([float(t), 1.0]) for t in ids_of_text[1:]], rtol=1e-6)


def test_colbert_rows_declared_unit_are_not_normalised_again(tmp_path: Path) -> None:
    loop = _FakeLoop(tmp_path)
    loop.colbert_is_unit = True
    _, _, colbert = loop.encode(IDS, batch_size=8, colbert=True, show_progress=False)
    assert colbert is not None
    assert [c.tolist() for c in colbert] == [[[float(t), 1.0] for t in ids[1:]] for ids in IDS]


def test_the_loop_keeps_input_order_across_batches_and_without_colbert(tmp_path: Path) -> None:
    loop = _FakeLoop(tmp_path)
    dense, sparse, colbert = loop.encode(IDS, batch_size=1, colbert=False, show_progress=False)
    assert colbert is None
    assert [len(b[0]) for b in loop.batches] == [1, 1, 1]
    assert [b[0].shape[1] for b in loop.batches] == [6, 5, 4]  # each batch padded to its own longest
    assert sparse[1] == {30: pytest.approx(3.0)}
    np.testing.assert_allclose(dense[1], _unit([40.0, 3.0]), rtol=1e-6)


def test_an_empty_batch_of_weights_gives_empty_dicts_and_a_zero_dense_row_stays_zero(tmp_path: Path) -> None:
    class Zero(_FakeLoop):
        def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
            rows, width = input_ids.shape
            return ForwardOutput(np.zeros((rows, 2)), np.zeros((rows, width)), None)

    dense, sparse, _ = Zero(tmp_path).encode(
        [[CLS, 5, EOS]], batch_size=4, colbert=False, show_progress=False
    )
    assert sparse == [{}]
    assert dense.tolist() == [[0.0, 0.0]]


def test_out_of_memory_from_the_seam_splits_the_batch(tmp_path: Path) -> None:
    class Oom(Exception):
        pass

    class Tight(_FakeLoop):
        def forward(self, input_ids: IntArray, attention_mask: IntArray, *, colbert: bool) -> ForwardOutput:
            if len(input_ids) > 1:
                raise Oom
            return super().forward(input_ids, attention_mask, colbert=colbert)

        def is_out_of_memory(self, exc: BaseException) -> bool:
            return isinstance(exc, Oom)

    whole = _FakeLoop(tmp_path).encode(IDS, batch_size=8, colbert=True, show_progress=False)
    split = Tight(tmp_path).encode(IDS, batch_size=8, colbert=True, show_progress=False)
    np.testing.assert_allclose(split[0], whole[0])
    assert split[1] == whole[1]
    assert split[2] is not None and whole[2] is not None
    for a, b in zip(split[2], whole[2], strict=True):
        np.testing.assert_allclose(a, b)


def test_tokenizer_info_reads_specials_and_max_length(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}), encoding="utf-8")
    config: dict[str, Any] = {"max_position_embeddings": 514, "model_type": "xlm-roberta", "pad_token_id": 1}
    tok = TokenizerInfo(_FakeTokenizer(), tmp_path, config)
    assert tok.pad_id == PAD
    assert tok.special_ids.tolist() == [CLS, PAD, EOS, UNK]
    assert tok.max_length == 256
    assert TokenizerInfo(_FakeTokenizer(), tmp_path / "none", config).max_length == 512  # 514 - pad - 1


def test_the_loop_module_imports_no_torch() -> None:
    code = (
        "import sys, milvus_m3.embedder.loop, milvus_m3.embedder.backends; "
        "print(sorted(m for m in ('torch', 'transformers', 'FlagEmbedding') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr
