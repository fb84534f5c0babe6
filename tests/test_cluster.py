"""Extraction on Ray: the same entry, bit for bit, as the local engine; out of order, faults and resume.

One simulated two-node Ray cluster serves every test of this module; each Ray test runs under a
timeout, so a hang fails instead of blocking the suite.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.cluster import RayEngine
from pipeline.cluster import extraction as ray_extraction
from pipeline.cluster.engine import local_system_config
from pipeline.data import open_source
from pipeline.extract import extract
from pipeline.jobs import Job, run_jobs
from pipeline.store import FeatureStore, TapSpec, open_entry
from pipeline.store.blocks import MissingRowsError, adopt_blocks, blocks_dir, write_block

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
# xdist_group: one Ray cluster at a time, never beside the four-cases quick run (both use every core)
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("whole-machine")]

TINY = dict(backbone="seednet_tiny", dataset="digits", taps=["conv2", "fc1"], weights="random", limit=300,
            batch_size=32)
CLI_TINY = ["extract", "--backbone", "seednet_tiny", "--dataset", "digits", "--layer", "conv2", "--layer", "fc1",
            "--weights", "random", "--limit", "300", "--batch-size", "32"]


def entry_contents(path) -> dict:
    """Every dataset and attribute of an entry file, except its creation time."""
    with h5py.File(path, "r") as f:
        out = {name: f[name][()] for name in ("labels", "ids", "class_names")}
        out.update({f"features/{t}": f["features"][t][()] for t in f["features"]})
        out.update({f"features/{t}@{k}": v for t in f["features"] for k, v in f["features"][t].attrs.items()})
        out.update({f"@{k}": v for k, v in f.attrs.items() if k != "created"})
        out["taps"] = list(f["features"])
    return out


def assert_same_entry(path, reference) -> None:
    """Bit-identical contents (every dataset, every attribute but `created`)."""
    got, want = entry_contents(path), entry_contents(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(np.asarray(got[name]), np.asarray(want[name])), name


@pytest.fixture(scope="module")
def local_entry(tmp_path_factory):
    """The single-process entry every Ray run must reproduce."""
    return extract(**TINY, cache_dir=tmp_path_factory.mktemp("local")).entry.path


@pytest.fixture(scope="module")
def ray_instance():
    """One simulated two-node cluster (head + one added node, 1 CPU each) on this machine for the module:
    starting Ray costs seconds, and every run on it must work without assuming one host."""
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=1, object_store_memory=128 << 20)
    cluster = Cluster(initialize_head=True, head_node_args=dict(node, include_dashboard=False,
                                                                _system_config=local_system_config(2)))
    cluster.add_node(**node)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _actor_pids() -> list[int]:
    """Processes of this module's backbone actors."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "_FrozenBackbone" in " ".join(proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


@pytest.mark.timeout(180)
def test_cli_ray_entry_is_bit_identical_on_two_nodes_out_of_order_and_after_a_worker_sigkill(
        ray_instance, local_entry, tmp_path, monkeypatch, capsys, store_every_program):
    """One Ray run (they cost seconds each here) checks five things: the CLI, two nodes, ranges finishing
    out of order, a worker SIGKILLed mid-run being replaced with nothing lost or doubled, and the workers
    storing their compiled backbone in the command's compile cache (the driver compiles none)."""
    # A worker holds 0.75 of a node's single CPU, so the two workers run on the two nodes.
    assert sorted(n["Resources"]["CPU"] for n in ray.nodes() if n["Alive"]) == [1.0, 1.0]
    # Ranges go to the workers last-first, so they finish far out of position order.
    pending = ray_extraction.pending_ranges
    monkeypatch.setattr(ray_extraction, "pending_ranges", lambda *a, **k: pending(*a, **k)[::-1])
    killed: list[int] = []
    done = threading.Event()

    def kill_one_worker_mid_run() -> None:
        while not done.is_set():
            blocks, pids = list(tmp_path.glob("*.partial/blocks/*.npz")), _actor_pids()
            if blocks and pids:  # under way: some ranges stored, workers computing
                os.kill(pids[0], signal.SIGKILL)
                killed.append(len(blocks))
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    try:
        code = main([*CLI_TINY, "--batch-size", "8", "--engine", "ray", "--workers", "2", "--cache-dir", str(tmp_path),
                     "--json"])
    finally:
        done.set()
        killer.join()
    out = capsys.readouterr().out  # Ray's own log lines about the lost worker may come first
    summary, _ = json.JSONDecoder().raw_decode(out[out.index("{\n"):])
    assert code == 0 and summary["computed"] == 300 and summary["n"] == 300
    assert killed and killed[0] < 300 // 8  # killed before every range was stored
    assert_same_entry(summary["path"], local_entry)
    assert not any(tmp_path.glob("*.partial"))  # shards adopted, partial directory gone
    assert any(f.name.startswith(("jit__forward", "jit__run")) for f in (tmp_path / "jax-compile").iterdir())


def test_workers_get_their_core_budget_and_the_compile_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_cpu_enable_fast_math=false")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    assert RayEngine(cpus_per_worker=3).actor_env() == {
        "XLA_FLAGS": "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=3",
        "OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}
    # enable_compile_cache's environment (what the commands switch on) reaches every worker
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    env = RayEngine().actor_env()
    assert (env["JAX_COMPILATION_CACHE_DIR"], env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == (str(tmp_path), "0.1")


def test_missing_or_wrong_shard_is_refused(local_entry, tmp_path):
    source = open_source("digits", "train", limit=300)
    entry = open_entry(local_entry)
    features = {t: entry.features(t) for t in entry.taps}
    taps = {t: TapSpec(i.shape, i.dtype, i.stride, i.attrs) for t, i in entry.taps.items()}
    with FeatureStore(tmp_path).writer(entry.key, taps, class_names=source.class_names) as writer:
        directory = blocks_dir(writer.paths["partial"])
        for lo in range(0, 300, 100):
            rows = slice(lo, lo + 100)
            write_block(directory, lo, lo + 100, {t: x[rows] for t, x in features.items()}, source.labels[rows],
                        source.ids[rows].tolist(), [])
        (directory / f"{100:012d}-{200:012d}.npz").unlink()
        with pytest.raises(MissingRowsError, match=r"positions \[\(100, 200\)\] of 300 have no valid shard"):
            adopt_blocks(writer, directory, source.ids)
        # A shard whose rows are not its positions' items (another node's data) counts as missing.
        write_block(directory, 100, 200, {t: x[200:300] for t, x in features.items()}, source.labels[200:300],
                    source.ids[200:300].tolist(), [])
        with pytest.raises(MissingRowsError, match=r"\(100, 200\)"):
            adopt_blocks(writer, directory, source.ids)
        assert writer.n_done == 0 and not writer.complete
        with pytest.raises(ValueError, match="holds 99 rows and 0 skipped items; expected 100"):
            write_block(directory, 0, 100, {t: x[:99] for t, x in features.items()}, source.labels[:99],
                        source.ids[:99].tolist(), [])


@pytest.mark.timeout(240)
def test_driver_killed_then_rerun_computes_only_the_missing_rows(ray_instance, local_entry, tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "pipeline", *CLI_TINY, "--batch-size", "8", "--engine", "ray", "--workers", "1",
            "--address", ray_instance.address, "--cache-dir", str(cache)]
    # Its own session, so the kill takes everything the driver started; the cluster outlives it.
    child = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while len(list(cache.glob("*.partial/blocks/*.npz"))) < 3 and child.poll() is None:
            assert time.monotonic() < deadline, "the Ray run stored nothing in time"
            time.sleep(0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    stored = len(list(cache.glob("*.partial/blocks/*.npz")))
    assert 3 <= stored < 300 // 8 + 1
    result = extract(**{**TINY, "batch_size": 8}, cache_dir=cache, engine="ray")
    assert 0 < result.computed <= 300 - 8 * stored  # only what no shard held (a shard cut by the kill is redone)
    assert_same_entry(result.entry.path, local_entry)


def test_bad_address_is_a_one_line_error(capsys, tmp_path):
    code = main([*CLI_TINY, "--engine", "ray", "--address", "127.0.0.1:9", "--cache-dir", str(tmp_path)])
    assert code == 2 and "no Ray head node answers at '127.0.0.1:9'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"bad Ray address 'headnode'; valid: 'auto' or HOST:PORT"):
        RayEngine(address="headnode")
    code = main([*CLI_TINY, "--workers", "2", "--cache-dir", str(tmp_path)])
    assert code == 2 and "need --engine ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown engine 'spark'; valid: local, ray"):
        extract(**TINY, engine="spark")
    with pytest.raises(ValueError, match="workers must be None or an integer >= 1, got 0"):
        RayEngine(workers=0)
    with pytest.raises(ValueError, match="cpus_per_worker must be an integer >= 1, got 0.5"):
        RayEngine(cpus_per_worker=0.5)
    assert RayEngine().worker_count({"CPU": 2.0}) == 2 and RayEngine(workers=1).worker_count({"CPU": 1.0}) == 1
    with pytest.raises(ValueError, match=r"1 worker\(s\) of 1 core\(s\) and 1 GPU\(s\).*do not fit the cluster's "
                                         r"16 CPUs and 0 GPUs"):
        RayEngine(gpus_per_worker=1).worker_count({"CPU": 16.0})
    with pytest.raises(ValueError, match=r"3 worker\(s\) of 1 core\(s\).*2 CPUs"):
        RayEngine(workers=3).worker_count({"CPU": 2.0})


def test_missing_ray_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ValueError, match=r"engine 'ray' needs Ray Data.*pip install 'pipeline\[ray\]'"):
        extract(**TINY, engine="ray", cache_dir=tmp_path)
    assert main([*CLI_TINY, "--engine", "ray", "--cache-dir", str(tmp_path)]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err


@pytest.mark.timeout(150)
def test_jobs_on_ray_give_the_local_results(ray_instance, tmp_path):
    def jobs(engine: str) -> list[Job]:
        return [Job(limit, extract, dict(TINY, limit=limit, batch_size=20, cache_dir=str(tmp_path / engine)),
                    cost=limit) for limit in (40, 60)]

    local = run_jobs(jobs("local"), workers=1)
    reported = []
    on_ray = run_jobs(jobs("ray"), workers=1, engine=RayEngine(workers=2),
                      on_done=lambda job, result: reported.append(job.key))
    assert sorted(reported) == sorted(on_ray) == sorted(local) == [40, 60]
    for limit, result in on_ray.items():
        assert not result.hit and result.entry.n == limit
        assert_same_entry(result.entry.path, local[limit].entry.path)
    with pytest.raises(ValueError, match="unknown engine 'dask'"):
        run_jobs(jobs("x"), workers=1, engine="dask")
