"""Independent runs as Ray tasks, one per job, each with its worker's resources and core budget."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

from pipeline.cluster.engine import RayEngine, connect


def _run_job(fn: Callable[..., Any], kwargs: dict[str, Any], setup: Callable[[], None] | None) -> Any:
    """In a Ray worker: the per-process settings, then the job (a reused worker repeats a cheap setup)."""
    if setup is not None:
        setup()
    return fn(**kwargs)


def run_jobs_on_ray(jobs: Sequence, engine: RayEngine, on_done: Callable[[Any, Any], None] | None = None,
                    setup: Callable[[], None] | None = None) -> dict[Hashable, Any]:
    """Runs every job as one Ray task, the costliest submitted first, at most `engine.workers` at a time.

    Args:
      jobs: pipeline.jobs.Job values, keys unique (checked by the caller); fn and kwargs picklable,
        fn importable on every node.
      engine: where and with what each task runs: `cpus_per_worker` cores (as XLA host devices) and
        `gpus_per_worker` GPUs per task; workers None: as many at once as the cluster holds.
      on_done, setup: as for pipeline.jobs.run_jobs.
    Returns:
      {job.key: result}. The first failing job's exception is raised; the others are cancelled.
    """
    ray = connect(engine)
    task = ray.remote(_run_job).options(num_cpus=engine.cpus_per_worker, num_gpus=engine.gpus_per_worker,
                                        runtime_env={"env_vars": engine.actor_env()}, max_retries=0)
    queue = sorted(jobs, key=lambda job: -job.cost)  # longest first: no long run starts last
    limit = engine.workers or len(queue)
    pending: dict[Any, Any] = {}
    results: dict[Hashable, Any] = {}
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.pop(0)
                pending[task.remote(job.fn, job.kwargs, setup)] = job
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            results[job.key] = ray.get(ref)  # raises the job's own exception (a RayTaskError subclass of it)
            if on_done is not None:
                on_done(job, results[job.key])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return results
