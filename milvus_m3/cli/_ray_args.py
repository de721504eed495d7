"""The --engine ray flags of ingest (RayOptions: address, actors, GPUs and CPUs per actor, retries)."""

from __future__ import annotations

import argparse

from ..ingest.options import ENGINES, RayOptions
from ._argtypes import default, non_negative_float_arg, positive_arg

__all__ = ["add_ray_arguments"]


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """ingest --engine ray: options and defaults from RayOptions (docs/scaling.md)."""
    ray = p.add_argument_group("Ray (--engine ray; pip install 'milvus-m3[ray]'; see docs/scaling.md)")
    ray.add_argument(
        "--engine",
        choices=ENGINES,
        default=ENGINES[0],
        help="local: this process; ray: a Ray Data job (FILEs may be object-store URIs)",
    )
    ray.add_argument(
        "--ray-address",
        default=default(RayOptions, "address"),
        help="Ray cluster: auto, ray://HOST:10001 (default: $RAY_ADDRESS, else a local Ray)",
    )
    ray.add_argument(
        "--actors", type=positive_arg, default=default(RayOptions, "actors"), help="embedding actors"
    )
    for name, what in (("gpus_per_actor", "GPUs"), ("cpus_per_actor", "CPUs")):
        ray.add_argument(
            f"--{name.replace('_', '-')}",
            type=non_negative_float_arg,
            default=default(RayOptions, name),
            help=f"{what} Ray reserves per actor (default {default(RayOptions, name)}; 0.5 GPU: two per GPU)",
        )
    ray.add_argument(
        "--write-batch-size",
        type=positive_arg,
        default=default(RayOptions, "write_batch_size"),
        help="rows per upsert request",
    )
    ray.add_argument(
        "--skip-existing",
        action="store_true",
        help="pass over documents stored unchanged (a server; the way to finish an interrupted Ray job)",
    )
