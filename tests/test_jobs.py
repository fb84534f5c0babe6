"""pipeline.jobs: runs in pinned worker processes, results by key, costliest first, errors that surface."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.jobs import Job, available_cores, core_groups, run_jobs

ROOT = Path(__file__).resolve().parents[1]
TWO_CORES = pytest.mark.skipif(len(available_cores()) < 2, reason="needs two cores")


def where_am_i(pause: float = 0.0) -> dict:
    """In a worker: its pinned cores and JAX's devices (JAX starts here, after pinning)."""
    import jax

    time.sleep(pause)
    return {"pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0)), "devices": jax.device_count(),
            "sum": float(jax.numpy.arange(4.0).sum())}


def wait_for(path: str) -> bool:
    """Whether `path` appears within a minute."""
    for _ in range(600):
        if Path(path).exists():
            return True
        time.sleep(0.1)
    return False


def sleep_long(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def fail(message: str) -> None:
    raise RuntimeError(message)


@TWO_CORES
def test_workers_are_pinned_to_their_own_core_with_one_device_each():
    jobs = [Job(i, where_am_i, {"pause": 0.5}) for i in range(4)]
    results = run_jobs(jobs, workers=2)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(len(r["cores"]) == 1 and r["devices"] == 1 and r["sum"] == 6.0 for r in results.values())
    by_worker = {r["pid"]: r["cores"][0] for r in results.values()}
    assert os.getpid() not in by_worker and len(set(by_worker.values())) == len(by_worker) == 2


@TWO_CORES
def test_each_result_is_reported_as_its_job_finishes(tmp_path):
    # the slow job ends only once the fast job's result has been reported here
    signal = tmp_path / "fast-reported"
    results = run_jobs([Job("slow", wait_for, {"path": str(signal)}, cost=2), Job("fast", print)], workers=2,
                       on_done=lambda job, result: signal.touch() if job.key == "fast" else None)
    assert results == {"slow": True, "fast": None}


def test_one_worker_runs_here_costliest_first():
    seen = []

    def record(name: str) -> str:
        seen.append(name)
        return name.upper()

    jobs = [Job(name, record, {"name": name}, cost) for name, cost in (("a", 1), ("b", 5), ("c", 3))]
    done = []
    assert run_jobs(jobs, workers=1, on_done=lambda job, result: done.append(result)) == {"a": "A", "b": "B", "c": "C"}
    assert seen == ["b", "c", "a"] and done == ["B", "C", "A"]


@TWO_CORES
def test_a_failing_job_raises_its_error_in_the_caller():
    with pytest.raises(RuntimeError, match="job 3 broke"):
        run_jobs([Job(1, where_am_i), Job(3, fail, {"message": "job 3 broke"})], workers=2)


@pytest.mark.parametrize("workers", [0, len(available_cores()) + 1, True, 1.5])
def test_bad_worker_counts_are_refused(workers):
    with pytest.raises(ValueError, match=rf"jobs must be an integer from 1 to the {len(available_cores())} "
                                         rf"available cores, got {workers!r}"):
        core_groups(workers)


def test_repeated_keys_are_refused():
    with pytest.raises(ValueError, match=r"job keys must be unique; repeated: \['x'\]"):
        run_jobs([Job("x", print), Job("x", print), Job("y", print)], workers=1)


def test_core_groups_cover_every_core_once():
    cores = available_cores()
    for n in range(1, len(cores) + 1):
        groups = core_groups(n)
        assert len(groups) == n and sorted(c for g in groups for c in g) == cores


@TWO_CORES
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_parent_ends_its_workers(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "parent.py"
    script.write_text(f"import sys\nsys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]\n"
                      "from pipeline.jobs import Job, run_jobs\nfrom test_jobs import sleep_long\n"
                      "if __name__ == '__main__':\n"
                      f"    run_jobs([Job(1, sleep_long, {{'pid_file': {str(pid_file)!r}}})], workers=2)\n")
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        for _ in range(600):
            if pid_file.is_file() and pid_file.read_text():
                break
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert running(worker)
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):
        if not running(worker):
            break
        time.sleep(0.1)
    assert not running(worker)
