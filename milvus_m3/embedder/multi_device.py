"""``M3Embedder(devices=[...])``: one worker process per device, each call's texts split between them.

This process keeps only the tokenizer (token counts, truncation and chunk spans happen here, as with
one device); each worker (a ``spawn``-ed process, as CUDA needs) loads the model on its device with
the same options and encodes a contiguous share of the token ids, shares balanced by tokens. Outputs
come back in input order. A worker that cannot load raises its error at construction. ``close()``
stops the workers (also when the backend is garbage collected).

Scripts that use it need the usual ``if __name__ == "__main__":`` guard (spawn re-imports the main
module). Imports no torch here (the workers do, through ``backends.load_in_process``).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..types import SparseVector
from .backend import BackendOptions, BackendOutput, EmbeddingBackend, default_threads
from .checkpoint import check_model_dir, resolve_model_dir
from .loop import TokenizerInfo
from .transformers_backend import load_tokenizer

_WORKER: EmbeddingBackend | None = None
_WORKER_ERROR: BaseException | None = None


def _init_worker(options: BackendOptions) -> None:
    global _WORKER, _WORKER_ERROR
    try:
        from .backends import load_in_process

        _WORKER = load_in_process(options)
    except BaseException as exc:  # raised again by the first task, with its message
        _WORKER_ERROR = exc


def _worker() -> EmbeddingBackend:
    if _WORKER is None:
        raise _WORKER_ERROR if _WORKER_ERROR is not None else RuntimeError("worker not started")
    return _WORKER


def _worker_describe() -> tuple[str, str, int, int]:
    w = _worker()
    return w.device, w.precision, w.dense_dim, w.colbert_dim


def _worker_encode(ids: list[list[int]], batch_size: int, colbert: bool) -> BackendOutput:
    return _worker().encode(ids, batch_size=batch_size, colbert=colbert, show_progress=False)


def load_multi_device_backend(options: BackendOptions) -> MultiDeviceBackend:
    if not options.devices:
        raise ConfigError("devices must name at least one device")
    model_dir = resolve_model_dir(options.model_name_or_path, options.cache_dir, options.local_files_only)
    colbert_dim = check_model_dir(model_dir)
    return MultiDeviceBackend(options, model_dir, colbert_dim)


class MultiDeviceBackend:
    """The tokenizer here, the model in one worker process per device."""

    def __init__(self, options: BackendOptions, model_dir: Path, colbert_dim: int) -> None:
        devices = options.devices or ()
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self._tok = TokenizerInfo(load_tokenizer(model_dir), model_dir, config)
        self.model_dir = model_dir
        self.max_length = self._tok.max_length
        self.dense_dim = int(config["hidden_size"])
        self.colbert_dim = colbert_dim
        self.vocab_size = int(config["vocab_size"])
        cpu_workers = sum(1 for d in devices if d.split(":")[0] == "cpu")
        threads = options.threads
        if threads is None and cpu_workers:
            threads = max(1, default_threads() // cpu_workers)  # CPU workers share the CPUs
        context = multiprocessing.get_context("spawn")
        self._pools: list[ProcessPoolExecutor] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._pools)
        for device in devices:
            worker_options = dataclasses.replace(
                options, devices=None, device=device, model_name_or_path=str(model_dir), threads=threads
            )
            self._pools.append(
                ProcessPoolExecutor(
                    1, mp_context=context, initializer=_init_worker, initargs=(worker_options,)
                )
            )
        try:
            described = [f.result() for f in [p.submit(_worker_describe) for p in self._pools]]
        except BaseException:
            self.close()
            raise
        precisions = {p for _, p, _, _ in described}
        if len(precisions) > 1:
            self.close()
            raise ConfigError(
                f"devices {list(devices)} resolve to different precisions ({', '.join(sorted(precisions))}); "
                "use devices of one kind or pass precision="
            )
        self.devices = tuple(d for d, _, _, _ in described)
        self.device = ",".join(self.devices)
        self.precision = described[0][1]

    # -- tokenizer (here) -------------------------------------------------------------------------

    def token_ids(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        return self._tok.token_ids(texts, special_tokens=special_tokens)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tok.offsets(text)

    def count(self, text: str) -> int:
        return len(self._tok.token_ids([text], special_tokens=False)[0])

    # -- model (in the workers) -------------------------------------------------------------------

    def encode(
        self, ids: list[list[int]], *, batch_size: int, colbert: bool, show_progress: bool
    ) -> BackendOutput:
        if not self._pools:
            raise ConfigError("this embedder was closed; create a new M3Embedder")
        bounds = split_by_tokens([len(seq) for seq in ids], len(self._pools))
        futures: list[Future[BackendOutput]] = [
            pool.submit(_worker_encode, ids[a:b], batch_size, colbert)
            for pool, (a, b) in zip(self._pools, bounds, strict=False)
        ]
        progress: Any = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(ids), desc="Encoding", unit="text")
        parts: list[BackendOutput] = []
        try:
            for future, (a, b) in zip(futures, bounds, strict=True):
                parts.append(future.result())
                if progress is not None:
                    progress.update(b - a)
        finally:
            if progress is not None:
                progress.close()
        dense: npt.NDArray[np.float32] = np.concatenate([p[0] for p in parts], axis=0)
        sparse: list[SparseVector] = [vec for p in parts for vec in p[1]]
        colbert_vecs = [v for p in parts for v in (p[2] or [])] if colbert else None
        return dense, sparse, colbert_vecs

    def close(self) -> None:
        self._finalizer()


def split_by_tokens(lengths: list[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` shares of ``lengths`` for at most ``parts`` workers, balanced by
    tokens; every share holds at least one text (fewer shares than ``parts`` for few texts)."""
    n = len(lengths)
    parts = max(1, min(parts, n))
    total = float(sum(lengths))
    cumulative = np.cumsum(lengths, dtype=np.float64)
    bounds: list[tuple[int, int]] = []
    start = 0
    for j in range(1, parts):
        cut = int(np.searchsorted(cumulative, total * j / parts, side="left")) + 1
        cut = min(max(cut, start + 1), n - (parts - j))  # keep one text for each share left
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def _shutdown(pools: list[ProcessPoolExecutor]) -> None:
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
    pools.clear()
