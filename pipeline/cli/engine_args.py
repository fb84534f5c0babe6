"""--engine and the Ray options, shared by every command (and script) that can run on a cluster."""

from __future__ import annotations

import argparse

from pipeline.cluster.engine import ENGINES, RayEngine


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--engine, --address, --workers, --cpus-per-worker, --gpus-per-worker (defaults: RayEngine's)."""
    defaults = RayEngine()
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; ray: Ray workers (pip install -e '.[ray]') (default: %(default)s)")
    p.add_argument("--address", default=defaults.address,
                   help="Ray cluster to join: HOST:PORT of its head or 'auto' (default: a local Ray instance)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="Ray workers (default: as many as the cluster's CPUs or GPUs hold)")
    p.add_argument("--cpus-per-worker", type=int, default=defaults.cpus_per_worker,
                   help="cores each Ray worker computes on (default: %(default)s)")
    p.add_argument("--gpus-per-worker", type=float, default=defaults.gpus_per_worker,
                   help="GPUs each Ray worker holds (default: %(default)s)")


def engine_from_args(args: argparse.Namespace) -> str | RayEngine:
    """'local', or the RayEngine the options describe; Ray options without --engine ray are an error."""
    ray = RayEngine(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                    gpus_per_worker=args.gpus_per_worker)
    if args.engine == "local":
        if ray != RayEngine():
            raise ValueError("--address, --workers, --cpus-per-worker and --gpus-per-worker need --engine ray")
        return "local"
    return ray
