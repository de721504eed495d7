"""CrossEncoderReranker on the tiny cross-encoder checkpoint against FlagEmbedding's ``FlagReranker``.

Scores (raw and sigmoid-normalised) equal ``FlagReranker(...).compute_score(pairs)`` to 1e-5, long pairs
included (cut the same way, but never silently); incomplete or wrong checkpoints are refused naming the
file; a ``pytorch_model.bin`` checkpoint goes through transformers and gives the same scores.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from milvus_m3 import CrossEncoderReranker
from milvus_m3.errors import ConfigError, InputError, ModelLoadError, TextTooLongError

pytestmark = pytest.mark.integration

QUERY = "how does hybrid vector search work?"
PASSAGES = [
    "Hybrid search fuses a dense vector ranking with a learned sparse ranking.",
    "Bread rises because yeast makes carbon dioxide.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "検索システムは文書をベクトルに変換します。",
    "",
    "token " * 700,  # longer than max_length=512: cut as FlagReranker cuts it
    "Late interaction compares every query token vector with every passage token vector.",
]
PAIRS = [(QUERY, p) for p in PASSAGES] + [("what makes bread rise " * 130, PASSAGES[1]), ("x", "y")]


@pytest.fixture(scope="module")
def flag_reranker(tiny_reranker_checkpoint: Path) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(str(tiny_reranker_checkpoint), use_fp16=False, devices="cpu")


def _close(ours: list[float], ref: list[float]) -> float:
    assert len(ours) == len(ref)
    return max(abs(a - b) for a, b in zip(ours, ref, strict=True))


def test_scores_equal_flagreranker_raw_and_normalised(
    tiny_reranker_checkpoint: Path, flag_reranker: Any
) -> None:
    raw = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", overflow="truncate")
    assert raw.model_name == str(tiny_reranker_checkpoint)
    ref = flag_reranker.compute_score(PAIRS)
    assert _close(raw.score_pairs(PAIRS), ref) <= 1e-5
    assert len(set(round(s, 6) for s in ref)) > len(ref) // 2  # the tiny model's scores are spread out
    assert _close(raw.score(QUERY, PASSAGES), ref[: len(PASSAGES)]) <= 1e-5

    norm = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", normalize=True, overflow="truncate")
    ref_norm = flag_reranker.compute_score(PAIRS, normalize=True)
    assert _close(norm.score_pairs(PAIRS), ref_norm) <= 1e-5
    assert all(0.0 < s < 1.0 for s in norm.score_pairs(PAIRS))

    # a shorter max_length (and query_max_length) cuts the same way FlagReranker does
    short = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", max_length=32, overflow="truncate")
    ref_short = flag_reranker.compute_score(PAIRS, max_length=32)
    assert _close(short.score_pairs(PAIRS), ref_short) <= 1e-5


def test_batching_does_not_change_scores(tiny_reranker_checkpoint: Path, tiny_reranker: Any) -> None:
    one_by_one = CrossEncoderReranker(
        tiny_reranker_checkpoint, device="cpu", batch_size=1, overflow="truncate"
    )
    short_pairs = PAIRS[:5] + PAIRS[6:7]
    assert _close(one_by_one.score_pairs(short_pairs), tiny_reranker.score_pairs(short_pairs)) <= 1e-5


def test_long_pairs_are_counted_and_warned_refused_or_cut(tiny_reranker_checkpoint: Path) -> None:
    warn = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu")
    with pytest.warns(UserWarning, match=r"2 of 9 \(query, passage\) pairs are longer than max_length=512"):
        warn.score_pairs(PAIRS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn.score(QUERY, PASSAGES[:5])  # nothing long: no warning
        CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", overflow="truncate").score_pairs(PAIRS)
    refuse = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", overflow="error")
    with pytest.raises(
        TextTooLongError, match=r"pair at row 5 has 1413 tokens \(query 8, passage 1401"
    ) as info:
        refuse.score(QUERY, PASSAGES)
    assert info.value.row == 5


def test_bad_arguments_are_refused(tiny_reranker_checkpoint: Path, tiny_reranker: Any) -> None:
    for kwargs, match in (
        ({"precision": "fp8"}, "precision must be one of"),
        ({"overflow": "cut"}, "overflow must be one of"),
        ({"max_length": 9000}, "more than the model .* can take \\(8192 tokens\\)"),
        ({"max_length": 4}, "max_length must be an int of at least 8"),
        ({"max_length": 64, "query_max_length": 64}, "leaves no room for the passage"),
        ({"normalize": 1}, "normalize must be True or False"),
        ({"precision": "fp16", "device": "cpu"}, "not supported on CPU"),
    ):
        with pytest.raises(ConfigError, match=match):
            CrossEncoderReranker(tiny_reranker_checkpoint, **kwargs)
    with pytest.raises(InputError, match="query must be a non-empty string"):
        tiny_reranker.score("  ", ["a"])
    with pytest.raises(InputError, match="single string"):
        tiny_reranker.score("q", "a passage")
    with pytest.raises(InputError, match="passage at row 1 is None"):
        tiny_reranker.score("q", ["a", None])
    assert tiny_reranker.score("q", []) == []


def _copy(src: Path, dst: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_incomplete_or_wrong_checkpoints_are_refused_naming_the_file(
    tiny_reranker_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    cases = [
        (("model.safetensors",), "model weights are missing"),
        (("config.json",), "config.json is missing"),
        (("tokenizer.json", "sentencepiece.bpe.model"), "tokenizer files are missing"),
    ]
    for i, (drop, match) in enumerate(cases):
        present = tuple(n for n in drop if (tiny_reranker_checkpoint / n).exists())
        broken = _copy(tiny_reranker_checkpoint, tmp_path / f"c{i}", drop=present)
        with pytest.raises(ModelLoadError, match=match):
            CrossEncoderReranker(broken, device="cpu")
    cut = _copy(tiny_reranker_checkpoint, tmp_path / "cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="model.safetensors in .* is corrupt or truncated"):
        CrossEncoderReranker(cut, device="cpu")
    with pytest.raises(ModelLoadError, match="not a sequence classifier"):
        CrossEncoderReranker(tiny_checkpoint, device="cpu")  # the BGE-M3 embedder, not a cross-encoder
    with pytest.raises(ModelLoadError, match="does not exist"):
        CrossEncoderReranker(tmp_path / "nowhere", device="cpu")


def test_a_pytorch_bin_checkpoint_loads_through_transformers_with_equal_scores(
    tiny_reranker_checkpoint: Path, tiny_reranker: Any, tmp_path: Path
) -> None:
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tiny_reranker_checkpoint))
    binary = _copy(tiny_reranker_checkpoint, tmp_path / "bin", drop=("model.safetensors",))
    model.save_pretrained(binary, safe_serialization=False)
    assert (binary / "pytorch_model.bin").is_file()
    other = CrossEncoderReranker(binary, device="cpu")
    assert other._model.kind == "transformers" and tiny_reranker._model.kind == "torch"
    assert _close(other.score(QUERY, PASSAGES[:5]), tiny_reranker.score(QUERY, PASSAGES[:5])) <= 1e-5
