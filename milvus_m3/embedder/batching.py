"""Batch planning and out-of-memory backoff for the model backends: pure Python + numpy, no torch.

``plan_batches`` cuts texts sorted longest first into batches bounded by a text count, by a budget of
padded tokens (``max_batch_tokens``: rows x the longest row, what a padded batch costs on a GPU) and
by a padding tolerance. ``run_with_backoff`` runs them; a batch that runs out of memory is split in
two and retried (logged at WARNING with the sizes), later batches stay below the size that failed,
and a single text that does not fit re-raises the error: each retry is smaller, so it always ends.

The encode loop (``loop``) and the cross-encoder (``rerankers``) use it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

logger = logging.getLogger("milvus_m3.embedder")

_IntArray = npt.NDArray[np.int64]

PAD_TOLERANCE = 0.05
PAD_MIN_TOKENS = 512


def plan_batches(
    sorted_lengths: _IntArray, batch_size: int, max_batch_tokens: int | None = None
) -> list[tuple[int, int]]:
    """Split texts sorted longest first into ``(start, stop)`` batches of at most ``batch_size``.

    A batch ends early when its padded size (rows x its first, longest row) would pass
    ``max_batch_tokens`` (a text longer than the budget runs alone), or when the next text would make
    padding more than 5% of its tokens in a batch of at least ``PAD_MIN_TOKENS`` padded tokens: long
    texts of mixed lengths then run in smaller, tighter batches (padding is wasted compute, and a batch
    without padding needs no attention mask), while short texts such as queries keep full batches.
    """
    lengths = sorted_lengths.tolist()
    budget = max_batch_tokens if max_batch_tokens is not None else float("inf")
    batches: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, length in enumerate(lengths):
        count = i - start
        padded = lengths[start] * (count + 1)
        if count and (
            count >= batch_size
            or padded > budget
            or (padded >= PAD_MIN_TOKENS and padded > (1 + PAD_TOLERANCE) * (tokens + length))
        ):
            batches.append((start, i))
            start, tokens = i, 0
        tokens += length
    if lengths:
        batches.append((start, len(lengths)))
    return batches


def run_with_backoff(
    batches: Sequence[tuple[int, int]],
    sorted_lengths: Sequence[int],
    run: Callable[[int, int], None],
    is_oom: Callable[[BaseException], bool],
    *,
    device: str,
    on_oom: Callable[[], None] | None = None,
) -> int:
    """Run ``run(start, stop)`` for every batch, splitting a batch that runs out of memory.

    ``sorted_lengths`` are the texts' lengths, longest first (a batch's padded size is its count x
    ``sorted_lengths[start]``). ``run`` must be safe to call again on a range after it failed (it
    writes its outputs only once the forward pass is done). ``on_oom`` runs after each out-of-memory
    error (e.g. ``torch.cuda.empty_cache``). Returns how many splits were made.
    """
    queue = deque(batches)
    failed_at: int | None = None  # the smallest padded size that ran out of memory in this call
    splits = 0
    while queue:
        start, stop = queue.popleft()
        count = stop - start
        padded = int(sorted_lengths[start]) * count
        if failed_at is not None and count > 1 and padded >= failed_at:
            # Do not run again what is known not to fit: split before trying.
            mid = start + count // 2
            queue.extendleft([(mid, stop), (start, mid)])
            continue
        try:
            run(start, stop)
        except Exception as exc:
            if not is_oom(exc):
                raise
            if on_oom is not None:
                on_oom()
            if count == 1:
                logger.warning(
                    "out of memory on %s on one text of %d tokens: nothing left to split; lower the max "
                    "length, chunk long documents (ingest --chunk-tokens) or use a device with more memory",
                    device,
                    padded,
                )
                raise
            mid = start + count // 2
            failed_at = padded if failed_at is None else min(failed_at, padded)
            splits += 1
            logger.warning(
                "out of memory on %s on a batch of %d texts x %d tokens (%d padded tokens); "
                "retrying it as batches of %d and %d texts (set max_batch_tokens below %d to avoid this)",
                device,
                count,
                int(sorted_lengths[start]),
                padded,
                mid - start,
                stop - mid,
                padded,
            )
            queue.extendleft([(mid, stop), (start, mid)])
    return splits
