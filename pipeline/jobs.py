"""Independent runs (fine-tunes, heads, recipes) in worker processes, each pinned to its own CPU cores.

On a CPU, XLA gets 1.6-1.85x from two cores on a small network's training step, and compiling, data
loading and Python run on one core. Separate processes, one per core, keep every core busy through those
too (four_cases.py's runs on 2 cores: ~1.1x for compute-bound seednet fine-tunes, ~1.4x for
compile-bound EfficientNet ones). Each worker is a fresh (spawned) interpreter pinned to its
cores before JAX starts, with one XLA host device per pinned core. Runs that share a feature-store entry
are safe: the store's per-entry lock makes the second wait for the first's result.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from pipeline.cluster.engine import RayEngine, resolve_engine


@dataclass(frozen=True)
class Job:
    """One run: `fn(**kwargs)` (fn importable by name, so a worker can find it); larger `cost` starts earlier."""

    key: Hashable
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    cost: float = 1.0


def available_cores() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_groups(jobs: int) -> list[list[int]]:
    """The available cores split into `jobs` groups as even as possible (round robin)."""
    cores = available_cores()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= len(cores):
        raise ValueError(f"jobs must be an integer from 1 to the {len(cores)} available cores, got {jobs!r}")
    return [cores[i::jobs] for i in range(jobs)]


def _end_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when its parent dies, so a killed run leaves no worker
    computing on (a pool's workers otherwise finish their current run first)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _pin_worker(groups, setup: Callable[[], None] | None) -> None:
    """Worker initializer: take a core group, pin to it, one XLA host device per core, then `setup()`."""
    from pipeline import _xla

    _end_with_parent()
    cores = groups.get()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    _xla.set_host_devices(len(cores))
    if setup is not None:
        setup()


def run_jobs(jobs: Sequence[Job], workers: int, on_done: Callable[[Job, Any], None] | None = None,
             setup: Callable[[], None] | None = None, engine: str | RayEngine = "local") -> dict[Hashable, Any]:
    """Runs every job, the costliest first, in `workers` pinned processes (1: here, in order), or on Ray.

    Args:
      jobs: the runs; keys must be unique.
      workers: processes, from 1 to the number of available cores.
      on_done: called in this process with each job and its result as it finishes.
      setup: called once in each worker before its first job (e.g. `partial(use_compile_cache, path)`:
        settings JAX keeps per process); picklable. Not called when workers is 1.
      engine: 'local' (the above), 'ray' or a RayEngine: one Ray task per job with the engine's
        per-worker resources, anywhere on the cluster (`workers` is then not used; see
        pipeline.cluster.jobs).
    Returns:
      {job.key: result}. The first failing job's exception is raised once running jobs end; queued
      ones are cancelled.
    """
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job keys must be unique; repeated: {sorted({str(k) for k in keys if keys.count(k) > 1})}")
    ray_engine = resolve_engine(engine)
    if ray_engine is not None:
        from pipeline.cluster.jobs import run_jobs_on_ray

        return run_jobs_on_ray(jobs, ray_engine, on_done, setup)
    groups = core_groups(workers)
    order = sorted(jobs, key=lambda job: -job.cost)  # longest first: no long run starts last
    results: dict[Hashable, Any] = {}
    if workers == 1:
        for job in order:
            results[job.key] = job.fn(**job.kwargs)
            if on_done is not None:
                on_done(job, results[job.key])
        return results
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: JAX not started, pinning applies
    queue = context.Queue()
    for group in groups:
        queue.put(group)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_pin_worker,
                             initargs=(queue, setup)) as pool:
        pending = {pool.submit(job.fn, **job.kwargs): job for job in order}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                results[job.key] = future.result()
                if on_done is not None:
                    on_done(job, results[job.key])
    return results
