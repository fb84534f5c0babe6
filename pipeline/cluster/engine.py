"""Where work runs: the local engine (this process) or Ray (a local instance or an existing cluster)."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

from pipeline.compile_cache import ENV_DIR, ENV_MIN_SECS

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'pipeline[ray]' (from a checkout: pip install -e '.[ray]')"
# Logical CPUs an actor reserves per core it computes on. Actors holding every CPU of a node left none
# for the decoding tasks that feed them: on 2 cores the job hung for 10 minutes without an error.
ACTOR_CPU_SHARE = 0.75
DECODE_CPUS = 0.25  # logical CPUs of one decoding task
LOCAL_OBJECT_STORE_MB = 512  # a local instance's object store: Ray's default (30% of RAM) crowds small hosts
CONNECT_TIMEOUT_S = 5.0


def local_system_config(cores: int) -> dict[str, int]:
    """Ray settings of an instance this package starts. Ray keeps at most one idle worker process per CPU,
    and actors count: with every core holding a model, decoding and writing workers were killed between
    tasks and started again for each (2-3 s apiece on 2 cores). Idle workers cost only memory."""
    return {"num_workers_soft_limit": 4 * cores}


@dataclass(frozen=True)
class RayEngine:
    """How a job runs on Ray.

    Args:
      address: None starts a local Ray instance on this machine; 'auto' joins the one `ray start` runs
        here; 'HOST:PORT' joins the cluster whose head listens there (`ray start --head --port PORT`).
      workers: model replicas (Ray actors); None: as many as the cluster's CPUs (or GPUs) allow.
      cpus_per_worker: cores each worker computes on (its XLA host devices); >= 1.
      gpus_per_worker: GPUs each worker holds (0: CPU workers).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ValueError(f"workers must be None or an integer >= 1, got {self.workers!r}")
        if isinstance(self.cpus_per_worker, bool) or not isinstance(self.cpus_per_worker, int) \
                or self.cpus_per_worker < 1:
            raise ValueError(f"cpus_per_worker must be an integer >= 1, got {self.cpus_per_worker!r}")
        if not (isinstance(self.gpus_per_worker, (int, float)) and self.gpus_per_worker >= 0):
            raise ValueError(f"gpus_per_worker must be a number >= 0, got {self.gpus_per_worker!r}")
        if self.address is not None:
            _parse_address(self.address)

    def actor_resources(self) -> dict[str, float]:
        """Ray resources of one worker: a fraction of its cores (see ACTOR_CPU_SHARE) and its GPUs."""
        return {"num_cpus": self.cpus_per_worker * ACTOR_CPU_SHARE, "num_gpus": self.gpus_per_worker}

    def actor_env(self) -> dict[str, str]:
        """Environment of a worker: its core budget, since a Ray actor sees (and XLA sizes itself to) the
        whole node. One XLA host device per core (as pipeline._xla sets for a whole machine). And this
        process's compile cache (pipeline.compile_cache), if on: a worker then loads the programs an earlier
        run compiled instead of compiling them again (seconds of its start-up)."""
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
        flags.append(f"--xla_force_host_platform_device_count={self.cpus_per_worker}")
        threads = str(self.cpus_per_worker)
        cache = {k: os.environ[k] for k in (ENV_DIR, ENV_MIN_SECS) if k in os.environ}
        return {"XLA_FLAGS": " ".join(flags), "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, **cache}

    def worker_count(self, cluster: dict[str, float]) -> int:
        """`workers`, or as many as the cluster's resources hold; an error when they do not fit, since
        Ray would wait for them forever (a pool of actors that never start is a silent hang).

        Args:
          cluster: the cluster's total resources, as `ray.cluster_resources()` gives them.
        """
        cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
        n = self.workers
        if n is None:
            n = math.floor(gpus / self.gpus_per_worker) if self.gpus_per_worker else \
                math.floor((cpus - DECODE_CPUS) / (self.cpus_per_worker * ACTOR_CPU_SHARE))
        need = self.actor_resources()
        if n < 1 or n * need["num_cpus"] + DECODE_CPUS > cpus or n * need["num_gpus"] > gpus:
            raise ValueError(f"{max(n, 1)} worker(s) of {self.cpus_per_worker} core(s) and {self.gpus_per_worker:g} "
                             f"GPU(s) (reserving {need['num_cpus']:g} CPUs each, plus {DECODE_CPUS} for decoding) "
                             f"do not fit the cluster's {cpus:g} CPUs and {gpus:g} GPUs; ask for fewer or smaller "
                             "workers, or add nodes")
        return n


def resolve_engine(engine: str | RayEngine) -> RayEngine | None:
    """None for the local engine, else the Ray settings ('ray' alone: RayEngine's defaults)."""
    if isinstance(engine, RayEngine):
        return engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)} (or a RayEngine)")
    return RayEngine() if engine == "ray" else None


def _parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of 'HOST:PORT'; None for 'auto'."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad Ray address {address!r}; valid: 'auto' or HOST:PORT of a head node "
                         "(`ray start --head` prints it), or leave it out for a local instance")
    return host, int(port)


def import_ray():
    """The ray module, or a ValueError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the 'data' extra)
    except ImportError as err:
        raise ValueError(f"engine 'ray' needs Ray Data, which is not installed ({err}); install it with "
                         f"{INSTALL_HINT}") from None
    return ray


def check_available(engine: RayEngine):
    """The ray module, after checking that it is installed and that the head `engine.address` names answers
    (in seconds: Ray itself retries an unreachable head for a minute). Raises ValueError saying what to do."""
    ray = import_ray()
    where = None if engine.address is None else _parse_address(engine.address)
    if where is not None:
        try:
            socket.create_connection(where, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise ValueError(f"no Ray head node answers at {engine.address!r} ({err}); start one with "
                             "`ray start --head --port PORT` and pass its HOST:PORT") from None
    return ray


def connect(engine: RayEngine):
    """Joins the cluster `engine.address` names, or starts a local instance; a Ray this process already
    joined (ray.init) is reused.

    Returns:
      The ray module, connected.
    Raises:
      ValueError: Ray missing (how to install it), or nothing answers at `address`.
    """
    ray = check_available(engine)
    if ray.is_initialized():
        return ray
    if engine.address is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        ray.init(num_cpus=cores, object_store_memory=LOCAL_OBJECT_STORE_MB << 20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, _system_config=local_system_config(cores))
        return ray
    try:
        ray.init(address=engine.address, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        raise ValueError(f"cannot join the Ray cluster at {engine.address!r}: {err}") from None
    return ray
