"""Helper of scripts/check_transformers5.sh: FlagEmbedding's reference outputs, and the check against them.

reference CHECKPOINT OUT.npz   (the dev venv: FlagEmbedding 1.4 + transformers 4.x)
    BGEM3FlagModel.encode on TEXTS (documents, max_length 8192, with ColBERT; queries, max_length
    512), saved as arrays.
check CHECKPOINT REF.npz WORKDIR   (the second venv: transformers 5.x, huggingface-hub >= 1, no
    FlagEmbedding)
    M3Embedder on the same checkpoint, through the default backend (BGE-M3's encoder in plain
    torch) and through transformers 5's AutoModel (the same weights as pytorch_model.bin), each
    within 1e-5 of the reference; backend="flagembedding" refused with MissingDependencyError
    naming the extra; a checkpoint built by milvus_m3.testing under transformers 5 loads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

TEXTS = [
    "BGE-M3 gives dense, sparse and multi-vector embeddings from one forward pass.",
    "Milvus stores dense and sparse vectors in one collection.",
    "Ein kurzer deutscher Satz über Vektorsuche.",
    "这是一个关于向量检索的中文句子。",
    "a literal </s> and <s> in the text, plus <pad>",
    "emoji 🙂 and rare ☃ symbols ✓",
    " ".join(["long text about retrieval and ranking"] * 60),
    "x",
]
ATOL = 1e-5


def _pack(prefix: str, out: dict[str, Any], arrays: dict[str, Any]) -> None:
    arrays[f"{prefix}_dense"] = np.asarray(out["dense_vecs"], dtype=np.float32)
    for i, weights in enumerate(out["lexical_weights"]):
        keys = sorted(int(k) for k in weights)
        arrays[f"{prefix}_sparse_keys_{i}"] = np.asarray(keys, dtype=np.int64)
        arrays[f"{prefix}_sparse_vals_{i}"] = np.asarray(
            [float(weights[str(k)]) for k in keys], dtype=np.float32
        )
    for i, vecs in enumerate(out.get("colbert_vecs") or []):
        arrays[f"{prefix}_colbert_{i}"] = np.asarray(vecs, dtype=np.float32)


def reference(checkpoint: str, out_path: str) -> int:
    import transformers
    from FlagEmbedding import BGEM3FlagModel

    flag = BGEM3FlagModel(checkpoint, use_fp16=False, devices="cpu")
    arrays: dict[str, Any] = {}
    docs = flag.encode(
        TEXTS, batch_size=4, max_length=8192, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    queries = flag.encode(TEXTS, batch_size=4, max_length=512, return_dense=True, return_sparse=True)
    _pack("doc", docs, arrays)
    _pack("query", queries, arrays)
    np.savez(out_path, **arrays)
    print(f"reference: FlagEmbedding on transformers {transformers.__version__}, {len(TEXTS)} texts")
    return 0


def _compare(name: str, ours: Any, ref: Any, prefix: str, colbert: bool) -> tuple[float, int]:
    worst = float(np.abs(ours.dense - ref[f"{prefix}_dense"]).max())
    terms = 0
    for i, row in enumerate(ours.sparse):
        keys = ref[f"{prefix}_sparse_keys_{i}"].tolist()
        if sorted(row) != keys:
            raise AssertionError(f"{name} {prefix} row {i}: sparse token ids differ from FlagEmbedding's")
        mine = np.asarray([row[k] for k in keys], dtype=np.float32)
        terms += len(keys)
        if keys:
            worst = max(worst, float(np.abs(mine - ref[f"{prefix}_sparse_vals_{i}"]).max()))
    if colbert:
        for i, vecs in enumerate(ours.colbert):
            theirs = ref[f"{prefix}_colbert_{i}"]
            if vecs.shape != theirs.shape:
                raise AssertionError(f"{name} colbert row {i}: shape {vecs.shape} != {theirs.shape}")
            worst = max(worst, float(np.abs(vecs - theirs).max()))
    if not worst <= ATOL:
        raise AssertionError(f"{name} {prefix}: max |difference| {worst:.2e} > {ATOL:g}")
    if terms == 0:
        raise AssertionError(f"{name} {prefix}: no sparse terms at all; the comparison would be empty")
    return worst, terms


def check(checkpoint: str, ref_path: str, workdir: str) -> int:
    import huggingface_hub
    import torch
    import transformers
    from safetensors.torch import load_file

    from milvus_m3 import M3Embedder
    from milvus_m3.errors import MissingDependencyError
    from milvus_m3.testing import build_checkpoint

    major = int(transformers.__version__.split(".")[0])
    hub_major = int(huggingface_hub.__version__.split(".")[0])
    if major < 5 or hub_major < 1:
        raise AssertionError(
            f"wrong venv: transformers {transformers.__version__}, hub {huggingface_hub.__version__}"
        )
    print(
        f"check: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"huggingface-hub {huggingface_hub.__version__}"
    )
    ref = np.load(ref_path)
    work = Path(workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    as_bin = work / "bin-checkpoint"
    shutil.copytree(checkpoint, as_bin)
    (as_bin / "model.safetensors").unlink()
    torch.save(load_file(str(Path(checkpoint) / "model.safetensors")), as_bin / "pytorch_model.bin")

    for name, path, kind in (("default", checkpoint, "torch"), ("AutoModel", str(as_bin), "transformers")):
        emb = M3Embedder(path, device="cpu")
        got = emb._backend.encoder_kind  # type: ignore[attr-defined]  # noqa: SLF001 (which encoder ran)
        if got != kind:
            raise AssertionError(f"{name}: encoder ran through {got!r}, expected {kind!r}")
        d, dt = _compare(name, emb.encode_documents(TEXTS, colbert=True, batch_size=3), ref, "doc", True)
        q, qt = _compare(name, emb.encode_queries(TEXTS), ref, "query", False)
        print(
            f"  {name} ({kind} encoder): max |diff| dense+sparse+colbert documents {d:.2e} ({dt} sparse "
            f"terms), queries {q:.2e} ({qt} terms), limit {ATOL:g}"
        )

    try:
        M3Embedder(checkpoint, device="cpu", backend="flagembedding")
    except MissingDependencyError as exc:
        if "milvus-m3[flagembedding]" not in str(exc):
            raise AssertionError(f"the refusal does not name the extra: {exc}") from exc
        print("  backend='flagembedding' without FlagEmbedding: MissingDependencyError names the extra")
    else:
        raise AssertionError("backend='flagembedding' loaded without FlagEmbedding installed")

    built = build_checkpoint(work / "built", tokenizer_file=Path(checkpoint) / "tokenizer.json")
    out = M3Embedder(built, device="cpu").encode_documents(TEXTS[:3])
    if not np.allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5):
        raise AssertionError("a checkpoint built under transformers 5 gives non-unit dense rows")
    print("  milvus_m3.testing.build_checkpoint under transformers 5: loads, unit dense rows")
    print("transformers 5 parity: OK")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "reference":
        return reference(argv[1], argv[2])
    if len(argv) == 4 and argv[0] == "check":
        return check(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
