"""`transfer`: the search's budget, successive halving and resume (fine-tunes faked, no clock read), the
frozen search end to end on seednet_tiny, a fine-tuned winner's export and test read, and the command."""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

import pipeline.data.spec
import pipeline.finetune
from pipeline.finetune import FinetuneSettings
from helpers import assert_allclose
from pipeline import backbones
from pipeline.cli import main
from pipeline.data import open_source
from pipeline.extract import extract
from pipeline.data import load_split
from pipeline.heads import fit_ridge, reduce_spatial
from pipeline.store import load
from pipeline.strategy import candidates as cands
from pipeline.strategy import search, transfer
from pipeline.strategy.search import Budget, Results, halving

TARGET = dict(dataset="digits", per_class=20)  # 200 training images, 10 classes
STEPS_PER_EPOCH = 10
transfer_module = importlib.import_module("pipeline.strategy.transfer")  # the package exports the function
BASE = dict(settings=FinetuneSettings())  # the search's target: its base settings, as `transfer` passes them


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A seednet_tiny checkpoint (random weights, initialised once: each random init compiles)."""
    path = tmp_path_factory.mktemp("source") / "seednet_tiny.safetensors"
    return backbones.save(backbones.create("seednet_tiny", "random", seed=3), path)


class TickClock:
    """A clock that advances one second every time it is read: the search's checks count, not its speed."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def fake_finetune(monkeypatch):
    """Replaces `pipeline.finetune.finetune` by a run of fake.per_epoch(epochs) budget checks per epoch
    (default STEPS_PER_EPOCH) whose validation accuracy is scores[candidate slug] + epochs / 100; records
    every call as [slug, epochs, steps run] (and its other arguments in fake.args)."""
    fake = SimpleNamespace(calls=[], scores={}, per_epoch=lambda epochs: STEPS_PER_EPOCH, args=[])

    def finetune(*, out, settings, progress, on_epoch, evaluate_test, **args):
        assert evaluate_test is False  # the search never opens the test split
        epochs = settings.epochs
        fake.args.append({**args, "settings": settings})
        slug = Path(out).parent.name
        fake.calls.append([slug, epochs, 0])
        val = fake.scores[slug] + epochs / 100
        for epoch in range(epochs):
            for _ in range(fake.per_epoch(epochs)):
                fake.calls[-1][2] += 1
                progress(fake.calls[-1][2], epochs * fake.per_epoch(epochs), {})
            on_epoch({"epoch": epoch + 1, "val_accuracy": val})
        return SimpleNamespace(best_val_accuracy=val, epochs_run=epochs, resumed_from=None,
                               backbone_path=Path(out) / "backbone.safetensors")

    monkeypatch.setattr(pipeline.finetune, "finetune", finetune)
    return fake


def _candidates(fake, values):
    out = [cands.Candidate("full", f"c{i}", {"mode": "full", "lr": 1e-3}) for i in range(len(values))]
    fake.scores.update({c.slug: v for c, v in zip(out, values)})
    return out


def test_successive_halving_promotes_the_best_third_and_resume_skips_finished_rungs(tmp_path, fake_finetune):
    assert search.rung_epochs(9, 3) == [1, 3, 9] and search.rung_epochs(2, 3) == [2]
    assert search.rung_epochs(10, 3) == [1, 3, 10]
    values = [0.5, 0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4]
    pool = _candidates(fake_finetune, values)
    run = dict(epochs=9, eta=3, target=BASE, out=tmp_path, results=Results(tmp_path), workers=1, checkpoint_every=1)
    rows, notes = halving(pool, budget=Budget.minutes(60), **run)
    assert [(c[0], c[1]) for c in fake_finetune.calls] == (
        [(f"c{i}", 1) for i in range(9)] + [("c1", 3), ("c3", 3), ("c5", 3)] + [("c1", 9)])
    # the candidate's learning rate, the rung's epochs and the checkpoint cadence go into the settings
    assert fake_finetune.args[-1] == {"mode": "full",
                                      "settings": FinetuneSettings(epochs=9, lr=1e-3, checkpoint_every=1)}
    assert [(r["name"], r["rung"], r["status"]) for r in rows[9:]] == [
        ("c1", 1, "done"), ("c3", 1, "done"), ("c5", 1, "done"), ("c1", 2, "done")]
    assert_allclose(rows[-1]["val_accuracy"], 0.9 + 0.09, rtol=0, atol=1e-12)
    assert "3 promoted: c1, c3, c5" in notes[0] and "1 promoted: c1" in notes[1]
    # a rerun with the same directory reads every finished rung back and trains nothing
    again, _ = halving(pool, budget=Budget.minutes(60), **run)
    assert len(fake_finetune.calls) == 13
    assert [r["val_accuracy"] for r in again] == [r["val_accuracy"] for r in rows]
    assert all(r["resumed"] for r in again)


def test_budget_stops_the_running_fine_tune_at_its_next_step_and_starts_nothing_after(tmp_path, fake_finetune):
    pool = _candidates(fake_finetune, [0.5, 0.9, 0.1, 0.8])
    clock = TickClock()
    budget = Budget(20.0, clock(), clock)  # the deadline falls inside the second run's first epoch
    rows, _ = halving(pool, epochs=1, eta=3, target=BASE, out=tmp_path, budget=budget, results=Results(tmp_path),
                      workers=1, checkpoint_every=1)
    assert [r["status"] for r in rows] == ["done", "stopped", "skipped", "skipped"]
    assert rows[1]["val_accuracy"] is None and rows[2]["seconds"] == rows[3]["seconds"] == 0.0
    # the second run trained until the clock passed the deadline and stopped at that very check
    first, second = fake_finetune.calls
    assert first[2] == STEPS_PER_EPOCH and 0 < second[2] < STEPS_PER_EPOCH
    # after the deadline: the stopped run's record, one check per skipped candidate, the search's end
    assert clock.now - budget.deadline == 1 + 2 + 1
    assert [p.name for p in (tmp_path / "candidates").iterdir()] == ["c0.e1.json"]  # only finished runs stored


def test_a_fine_tune_priced_past_the_deadline_is_not_started(tmp_path, fake_finetune):
    (c,) = _candidates(fake_finetune, [0.5])
    run = dict(candidate=c, rung=0, epochs=3, target=BASE, run_dir=str(tmp_path / c.slug / "e3"), start_by=math.inf,
               checkpoint_every=1)
    clock = TickClock()
    budget = Budget(100.0, clock(), clock)  # deadline 101; the first check reads 2
    assert search.finetune_candidate(budget=budget, expected=99.5, **run)["status"] == "skipped"
    assert fake_finetune.calls == []
    assert search.finetune_candidate(budget=budget, expected=90.0, **run)["status"] == "done"
    rows = [{"status": "done", "seconds": s, "epochs_run": e} for s, e in ((6.0, 1), (9.0, 3), (40.0, 2))]
    assert search.epoch_seconds(rows + [{"status": "stopped", "seconds": 1.0, "epochs_run": 1}]) == 6.0


def test_rung_shares_stop_screening_but_promoted_runs_still_train(tmp_path, fake_finetune):
    pool = _candidates(fake_finetune, [0.5, 0.9, 0.1, 0.8, 0.3, 0.7])
    clock = TickClock()
    budget = Budget(120.0, clock(), clock)  # rung 0 may start runs for its half: about 4 one-epoch runs
    rows, notes = halving(pool, epochs=3, eta=3, target=BASE, out=tmp_path, budget=budget, results=Results(tmp_path),
                          workers=1, checkpoint_every=1)
    screened = [r for r in rows if r["rung"] == 0]
    assert [r["status"] for r in screened].count("skipped") >= 1 and screened[0]["status"] == "done"
    best = max((r for r in screened if r["status"] == "done"), key=lambda r: r["val_accuracy"])
    assert [(r["name"], r["status"]) for r in rows if r["rung"] == 1][0] == (best["name"], "done")


def test_time_left_after_the_last_rung_screens_the_candidates_rung_0_did_not_reach(tmp_path, fake_finetune):
    pool = _candidates(fake_finetune, [0.5, 0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4])
    fake_finetune.per_epoch = lambda epochs: STEPS_PER_EPOCH // epochs  # a longer rung costs no more
    clock = TickClock()
    budget = Budget(100.0, clock(), clock)
    rows, notes = halving(pool, epochs=3, eta=3, target=BASE, out=tmp_path, budget=budget, results=Results(tmp_path),
                          workers=1, checkpoint_every=1)
    # bracket 1: rung 0 screens c0-c3 in its half, c1 and c3 go on and finish early; bracket 2 screens c4
    assert [(r["name"], r["rung"], r["status"]) for r in rows] == (
        [(f"c{i}", 0, "done") for i in range(4)] + [("c1", 1, "done"), ("c3", 1, "done"), ("c4", 0, "done")]
        + [(f"c{i}", 0, "skipped") for i in range(5, 9)] + [("c4", 1, "stopped")])
    assert notes[2] == "5 not screened yet: another bracket with the time left."


@pytest.mark.parametrize("budget", [0, -1.0, math.nan, math.inf, True, "2"])
def test_bad_budgets_are_clear_errors(budget):
    with pytest.raises(ValueError, match=rf"budget must be a positive, finite number of minutes, got {budget!r}"):
        transfer("seednet_tiny", budget=budget, weights="random", **TARGET)


@pytest.mark.parametrize("kwargs, message", [
    (dict(candidates=["ridge", "lora"]), r"unknown candidate 'lora'; valid: ridge, linear, mlp, concat, last-k, "
                                         r"lp-ft, full, transfer, scratch"),
    (dict(candidates=[]), r"candidates must be a non-empty list of names; valid: ridge, linear"),
    (dict(finetune_lrs=[1e-3, -1.0]), r"learning rates must be a non-empty list of positive numbers"),
    (dict(epochs=0), r"epochs must be an int >= 1, got 0"),
])
def test_bad_settings_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        transfer("seednet_tiny", budget=1, weights="random", out=tmp_path, **(TARGET | kwargs))


def _row(name: str, family: str, val: float) -> dict:
    return dict(name=name, family=family, status="done", val_accuracy=val, seconds=1.0)


def test_the_simplest_candidate_within_one_standard_error_of_the_best_wins():
    lucky = [_row("linear@b lr=0.03", "linear", 1.0), _row("lp-ft x1 lr=0.001", "lp-ft", 1.0),
             _row("ridge@a", "ridge", 143 / 144), _row("ridge@b", "ridge", 142 / 144)]
    best, why = search.pick(lucky, n_val=144)  # 1.0 and 143/144 are one image apart
    assert best["name"] == "ridge@a"
    assert why.startswith("Winner ridge@a (validation 0.9931): the simplest of the 3 of 4 finished runs within "
                          "one standard error (0.0069, 144 validation images) of the best, linear@b lr=0.03 (1.0000)")
    best, _ = search.pick(lucky, n_val=3000)  # 3000 images can tell them apart
    assert best["name"] == "linear@b lr=0.03"
    mid = [_row("mlp@a lr=0.01", "mlp", 0.90), _row("ridge@a", "ridge", 0.88), _row("linear@a", "linear", 0.885)]
    assert search.pick(mid, n_val=1000)[0]["name"] == "mlp@a lr=0.01"  # sqrt(.9 * .1 / 1000) = 0.0095: alone
    assert search.pick(mid, n_val=200)[0]["name"] == "ridge@a"  # 0.021: all three
    ties = [_row("ridge@a", "ridge", 0.9), _row("ridge@b", "ridge", 0.9), _row("skipped", "ridge", None)]
    ties[2]["status"] = "skipped"
    assert search.pick(ties, n_val=100)[0]["name"] == "ridge@a"  # equal: the earlier run


def test_frozen_candidates_run_ridge_on_every_tap_first_then_the_rest_by_its_score(tmp_path):
    rng = np.random.default_rng(0)
    y, yv = rng.integers(0, 3, 90), rng.integers(0, 3, 60)
    noise = lambda n: rng.normal(size=(n, 4)).astype(np.float32)  # noqa: E731
    means = rng.normal(size=(3, 4)) * 3  # tap b: one mean per class
    signal = lambda labels: means[labels].astype(np.float32)  # noqa: E731
    train = ({"a": noise(90), "b": noise(90) + signal(y), "c": noise(90)}, y)
    val = ({"a": noise(60), "b": noise(60) + signal(yv), "c": noise(60)}, yv)
    every = cands.frozen_candidates(["ridge", "linear", "concat"], ["a", "b", "c"])
    rows, fitted = search.run_frozen(every, train, val, Budget.minutes(60), Results(tmp_path), seed=0)
    names = [r["name"] for r in rows]
    assert names[:3] == ["ridge@a", "ridge@b", "ridge@c"]
    assert names[3:6] == ["linear@b", "linear@b lr=0.003", "linear@b lr=0.03"]  # b: ridge's best tap
    assert names[-1] == "linear@concat lr=0.03" and len(rows) == len(every)
    assert sorted(fitted) == sorted(n for n in names if "ridge" not in n)  # ridge is refit for a winner only
    assert rows[0]["val_accuracy"] < rows[1]["val_accuracy"] > rows[2]["val_accuracy"]


def test_a_budget_spent_in_the_frozen_phase_screens_no_fine_tune(tmp_path, monkeypatch, source):
    def evidence(*args, **kwargs):
        raise AssertionError("the fine-tunes' evidence was measured after the deadline")

    monkeypatch.setattr(transfer_module, "_evidence", evidence)
    # TickClock: the budget's start and the extraction's end read it once each, each ridge fit twice (the
    # deadline check, its row's spent_at): 11 s let all five fits start, and the deadline has passed when
    # the frozen phase ends
    result = transfer("seednet_tiny", budget=11 / 60, clock=TickClock(), candidates=["ridge", "full"],
                      weights=source, out=tmp_path, **TARGET)
    assert [r["status"] for r in result.leaderboard] == ["done"] * 5
    assert "The budget ended in the frozen phase: no fine-tune was screened." in result.reasons
    assert result.family == "ridge" and result.model.is_file()


def test_family_order_follows_the_measurements():
    evidence = cands.Evidence({"conv1": 0.6, "conv2": 0.7, "fc1": 0.9}, ["conv1"])
    costly = [f for f in cands.FAMILIES if f not in cands.FROZEN]
    assert cands.family_order(costly, evidence)[0] == ["lp-ft", "last-k", "full", "transfer", "scratch"]
    different = cands.Evidence({"conv1": 0.9, "conv2": 0.95, "fc1": 0.7}, ["conv1"],
                               bn_shift={"conv1": 1.5}, median_per_class=1000.0)
    order, reasons = cands.family_order(costly, different)
    assert order == ["transfer", "scratch", "lp-ft", "full", "last-k"]
    assert "different" in reasons[0] and "scratch is screened second" in reasons[1] and "last-k" in reasons[2]
    assert cands.transfer_cut(different) == 2  # copy conv1, conv2: conv2 probes best below the last tap
    ordered, _ = cands.costly_candidates(["lp-ft", "full"], evidence, stages=3, lrs=(1e-3, 1e-2))
    assert [c.name for c in ordered] == ["lp-ft x0.1 lr=0.001", "lp-ft x1 lr=0.001", "full x0.1 lr=0.001",
                                         "lp-ft x0.1 lr=0.01", "lp-ft x1 lr=0.01", "full x0.1 lr=0.01"]


@pytest.fixture
def test_reads(monkeypatch):
    """Counts every opening of a data set's test split (`open_source` builds one Source per opening)."""
    opened = []

    class Counting(pipeline.data.spec.Source):
        def __init__(self, spec, split, *args, **kwargs):
            opened.append(split)
            super().__init__(spec, split, *args, **kwargs)

    monkeypatch.setattr(pipeline.data.spec, "Source", Counting)
    return opened


def _features(source, split: str, taps: list[str]):
    subset = dict(per_class=20) if split == "train" else {}
    entry = extract("seednet_tiny", "digits", taps, weights=source, split=split, pool="grid", **subset).entry
    return load(entry, taps[0])[1], {t: reduce_spatial(load(entry, t)[0], "flatten") for t in taps}


def test_frozen_search_picks_on_validation_reads_test_once_writes_report_and_resumes(tmp_path, test_reads,
                                                                                      monkeypatch, source):
    result = transfer("seednet_tiny", budget=5, candidates=["ridge"], weights=source, out=tmp_path, **TARGET)
    assert test_reads.count("test") == 1 and test_reads[-1] == "test"  # once, after every decision
    board = result.leaderboard
    assert [r["name"] for r in board] == ["ridge@conv1", "ridge@conv2", "ridge@conv3", "ridge@fc1", "ridge@fc2"]
    best = max(board, key=lambda r: r["val_accuracy"])
    assert (result.winner, result.val_accuracy) == (best["name"], best["val_accuracy"])
    tap = best["params"]["taps"][0]
    (y, x), (yv, xv), (yt, xt) = (_features(source, s, [tap]) for s in ("train", "val", "test"))
    reference = fit_ridge(x[tap], y, xv[tap], yv, cands.RIDGE_L2S)
    assert reference.l2_ == best["l2"]
    # its score is the sweep's, fitted on train alone, not the refit's (which has seen val)
    assert_allclose(best["val_accuracy"], reference.sweep.best_accuracy, rtol=0, atol=0)
    assert_allclose(result.test_accuracy, reference.score(xt[tap], yt), rtol=0, atol=0)
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert saved["winner"] == result.winner and len(saved["leaderboard"]) == 5
    assert all(r["budget_fraction"] == r["seconds"] / 300.0 for r in saved["leaderboard"])
    assert saved["leaderboard"][0]["name"] == result.winner  # sorted best first
    assert f"# transfer: {result.winner} wins" in (tmp_path / "leaderboard.md").read_text()
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.model == tmp_path / "final" / "head.safetensors" and result.model.is_file()
    # rerun: every candidate is read back, none fitted again; only the winner's refit runs
    def refit(*args, **kwargs):
        raise AssertionError("a stored candidate was fitted again")

    monkeypatch.setattr(search, "score_frozen", refit)
    again = transfer("seednet_tiny", budget=5, candidates=["ridge"], weights=source, out=tmp_path, **TARGET)
    assert all(r["resumed"] for r in again.leaderboard)
    assert (again.winner, again.test_accuracy) == (result.winner, result.test_accuracy)
    with pytest.raises(ValueError, match=r"holds the results of a search with other settings \(per_class differ\)"):
        transfer("seednet_tiny", budget=5, candidates=["ridge"], weights=source, out=tmp_path,
                 **(TARGET | dict(per_class=30)))
    with pytest.raises(TimeoutError, match=r"the budget of 0.0166.* minutes ended before any candidate finished; "
                                           r"rerun with the same --out to resume"):
        transfer("seednet_tiny", budget=1 / 60, clock=TickClock(), candidates=["full"], weights=source,
                 out=tmp_path / "none", **TARGET)  # one tick: over at the first check, no fine-tune starts


def test_an_extraction_that_outlasts_the_budget_still_gives_the_first_ridge(tmp_path, source):
    result = transfer("seednet_tiny", budget=1 / 60, clock=TickClock(), candidates=["ridge", "linear"],
                      weights=source, out=tmp_path, **TARGET)  # one tick: over when the extraction ends
    first, *rest = result.leaderboard
    assert (first["name"], first["status"], result.winner) == ("ridge@conv1", "done", "ridge@conv1")
    assert len(rest) > 1 and all(r["status"] == "skipped" for r in rest)
    assert "The extraction pass outlasted the budget; ridge@conv1 ran anyway so that the features give a model." \
        in result.reasons


def test_a_fine_tuned_winner_is_exported_and_scored_on_test_once(tmp_path, test_reads, source):
    result = transfer("seednet_tiny", budget=5, candidates=["full"], finetune_lrs=[1e-3], epochs=1, batch_size=32,
                      weights=source, out=tmp_path, **TARGET)
    (row,) = result.leaderboard
    assert (result.winner, row["status"], row["epochs_run"]) == ("full x0.1 lr=0.001", "done", 1)
    assert result.model == tmp_path / "final" / "backbone.safetensors"
    assert result.model.read_bytes() == (tmp_path / "runs" / "full_x0.1_lr_0.001" / "e1" / "backbone.safetensors"
                                         ).read_bytes()
    assert test_reads.count("test") == 1  # the fine-tune itself never opened it
    model = backbones.create("seednet_tiny", result.model)
    images, labels = load_split(open_source("digits", "test"), None)
    predicted = np.argmax(np.asarray(model(model.preprocessing(jnp.asarray(images)))), axis=1)
    assert_allclose(result.test_accuracy, np.mean(predicted == labels), rtol=0, atol=0)


def test_transfer_command(tmp_path, capsys, source):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline", "transfer", "--backbone", "seednet_tiny", "--weights", str(source),
               "--dataset", "digits", "--per-class", "20", "--budget", "3", "--candidates", "ridge", "--out", str(out),
               "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    best = max(result["leaderboard"], key=lambda r: r["val_accuracy"])
    assert (result["winner"], result["val_accuracy"]) == (best["name"], best["val_accuracy"])
    assert len(result["leaderboard"]) == 5 and (out / "leaderboard.md").is_file() and (out / "chart.png").is_file()
    assert main(["transfer", "--backbone", "seednet_tiny", "--dataset", "digits", "--budget", "0"]) == 2
    assert "error: budget must be a positive, finite number of minutes, got 0.0" in capsys.readouterr().err


def test_fine_tunes_in_two_worker_processes_match_the_in_process_search(tmp_path, source):
    kw = dict(budget=5, candidates=["full", "scratch"], finetune_lrs=[1e-3], epochs=1, batch_size=32, weights=source,
              **TARGET)
    alone = transfer("seednet_tiny", out=tmp_path / "one", workers=1, **kw)
    spread = transfer("seednet_tiny", out=tmp_path / "two", workers=2, **kw)  # one spawned, pinned process each
    rows = {r["name"]: r for r in spread.leaderboard}
    assert sorted(rows) == ["full x0.1 lr=0.001", "scratch lr=0.001"]
    assert all(r["status"] == "done" and r["epochs_run"] == 1 for r in rows.values())
    for row in alone.leaderboard:
        assert_allclose(rows[row["name"]]["val_accuracy"], row["val_accuracy"], rtol=0, atol=0)
    assert (spread.winner, spread.test_accuracy) == (alone.winner, alone.test_accuracy)
