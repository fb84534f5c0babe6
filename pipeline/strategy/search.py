"""The search's machinery: the wall-clock budget, per-candidate results on disk (resume), frozen fits on
cached features, and successive halving over fine-tunes."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.finetune.settings import split_settings
from pipeline.heads import HEADS, fit_ridge, ridge_sweep
from pipeline.jobs import Job, run_jobs
from pipeline.paths import claim_settings
from pipeline.strategy.candidates import FAMILIES, Candidate, by_probe


class BudgetExhausted(Exception):
    """Raised at a check after the deadline; the search catches it and keeps what was measured."""


@dataclass(frozen=True)
class Budget:
    """A deadline `seconds` after `start` on `clock` (wall time by default, so workers share it)."""

    seconds: float
    start: float
    clock: Callable[[], float] = time.time

    @classmethod
    def minutes(cls, minutes: float, clock: Callable[[], float] = time.time) -> "Budget":
        """A budget of `minutes` starting now; anything but a finite number > 0 is a ValueError."""
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < math.inf:
            raise ValueError(f"budget must be a positive, finite number of minutes, got {minutes!r}")
        return cls(60.0 * minutes, clock(), clock)

    @property
    def deadline(self) -> float:
        return self.start + self.seconds

    def spent(self) -> float:
        return self.clock() - self.start

    def check(self, by: float | None = None) -> None:
        """Raises BudgetExhausted once the clock reaches the deadline (or the earlier `by`)."""
        if self.clock() >= min(self.deadline, math.inf if by is None else by):
            raise BudgetExhausted


class Results:
    """One JSON file per finished candidate (fine-tunes: per epoch count) in DIR/candidates, written
    atomically: a rerun with the same directory skips them. DIR/search.json holds the settings they were
    measured under (the target task and source); a directory of another search is refused."""

    def __init__(self, out: Path, settings: dict[str, Any] | None = None):
        self.dir = out / "candidates"
        self.dir.mkdir(parents=True, exist_ok=True)
        claim_settings(out / "search.json", settings or {}, "the results of a search", "ones")

    def get(self, key: str) -> dict | None:
        path = self.dir / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, record: dict) -> None:
        tmp = self.dir / f".{key}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.dir / f"{key}.json")


def record(candidate: Candidate, status: str, val_accuracy: float | None, seconds: float, **extra: Any) -> dict:
    """A leaderboard row."""
    return {"name": candidate.name, "family": candidate.family, "params": candidate.params, "status": status,
            "val_accuracy": val_accuracy, "seconds": seconds, **extra}


def stack(features: dict[str, np.ndarray], taps: Sequence[str]) -> np.ndarray:
    """(N, sum of D) float32: the taps' flattened features side by side."""
    return np.concatenate([features[t] for t in taps], axis=1) if len(taps) > 1 else features[taps[0]]


def fit_frozen(candidate: Candidate, train: tuple[dict, np.ndarray], val: tuple[dict, np.ndarray],
               seed: int) -> tuple[Any, float]:
    """Fits a frozen candidate on the train features and scores it on val.

    Args:
      train, val: ({tap: (N, D) features}, (N,) labels).
    Returns:
      (fitted model, validation accuracy). Ridge picks its L2 on val and is then refit on train + val, so
      its score is the sweep's (fitted on train alone); heads early-stop on val; a linear head without a
      rate is LinearHead's default (L-BFGS, no rate to tune).
    """
    p = candidate.params
    x, y = stack(train[0], p["taps"]), train[1]
    xv, yv = stack(val[0], p["taps"]), val[1]
    if "l2s" in p:
        model = fit_ridge(x, y, xv, yv, p["l2s"])
        return model, float(model.sweep.best_accuracy)
    rate = {"lr": p["lr"]} if "lr" in p else {}
    solver = {"solver": "adamw"} if p["head"] == "linear" and rate else {}  # a rate grid is a minibatch solver's
    model = HEADS[p["head"]](seed=seed, **rate, **solver).fit(x, y, xv, yv)
    return model, float(model.score(xv, yv))


def score_frozen(candidate: Candidate, train: tuple[dict, np.ndarray], val: tuple[dict, np.ndarray],
                 seed: int) -> tuple[Any, float, dict[str, Any]]:
    """A frozen candidate's validation accuracy as the search needs it: ridge by its sweep alone (the refit
    on train + val, D x D or (N + M) x (N + M), is left to the winner), heads by `fit_frozen`.

    Returns:
      (the fitted head, or None for ridge; validation accuracy; the leaderboard's extra fields).
    """
    p = candidate.params
    if "l2s" in p:
        sweep = ridge_sweep(stack(train[0], p["taps"]), train[1], stack(val[0], p["taps"]), val[1], p["l2s"])
        return None, float(sweep.best_accuracy), {"l2": sweep.best_l2}
    model, accuracy = fit_frozen(candidate, train, val, seed)
    return model, accuracy, {}


def run_frozen(candidates: Sequence[Candidate], train, val, budget: Budget, results: Results,
               seed: int) -> tuple[list[dict], dict[str, Any]]:
    """Every frozen candidate (stored ones read back), cheapest evidence first: the ridge fits in the given
    order, then the rest ordered by their tap's ridge score (`candidates.by_probe`); those reached after the
    deadline are skipped, but for the first: when the deadline passed before any candidate finished (the
    extraction pass took it), the first still runs, so that the features paid for give a model.

    Returns:
      (rows, {name: fitted head} of the heads fitted in this call, so a winning head needs no refit).
    """
    rows: list[dict] = []
    fitted: dict[str, Any] = {}
    ridge = [c for c in candidates if c.family == "ridge"]
    for stage in (ridge, None):
        if stage is None:
            probe = {r["params"]["taps"][0]: r["val_accuracy"] for r in rows if r["status"] == "done"}
            stage = by_probe([c for c in candidates if c.family != "ridge"], probe)
        for c in stage:
            stored = results.get(c.slug)
            if stored is not None:
                rows.append({**stored, "resumed": True})
                continue
            if budget.clock() >= budget.deadline and any(r["status"] == "done" for r in rows):
                rows.append(record(c, "skipped", None, 0.0))
                continue
            start = time.perf_counter()
            model, acc, extra = score_frozen(c, train, val, seed)
            row = record(c, "done", acc, time.perf_counter() - start, rung=None, spent_at=budget.spent(), **extra)
            results.put(c.slug, row)
            if model is not None:
                fitted[c.name] = model
            rows.append(row)
    return rows, fitted


def pick(rows: Sequence[dict], n_val: int) -> tuple[dict, str]:
    """The winner among the finished rows, by the one-standard-error rule, and why.

    Of the candidates whose validation accuracy is within one binomial standard error of the best,
    sqrt(p (1 - p) / n_val) at the best p (at least 1 / n_val: one image), the simplest wins: the first
    family in FAMILIES' order (ridge, linear, mlp, concat, then the fine-tunes), then the higher validation
    accuracy, then the earlier run. A few hundred validation images cannot tell 0.993 from 1.0; the
    simpler recipe is the safer bet.
    """
    finished = [r for r in rows if r["status"] == "done"]
    top = max(finished, key=lambda r: r["val_accuracy"])
    p = top["val_accuracy"]
    error = max(math.sqrt(p * (1 - p) / n_val), 1 / n_val)
    near = [(i, r) for i, r in enumerate(finished) if r["val_accuracy"] >= p - error - 1e-12]
    best = min(near, key=lambda ir: (list(FAMILIES).index(ir[1]["family"]), -ir[1]["val_accuracy"], ir[0]))[1]
    return best, (f"Winner {best['name']} (validation {best['val_accuracy']:.4f}): the simplest of the {len(near)} "
                  f"of {len(finished)} finished runs within one standard error ({error:.4f}, {n_val} validation "
                  f"images) of the best, {top['name']} ({p:.4f}).")


def finetune_candidate(*, candidate: Candidate, rung: int, epochs: int, target: dict[str, Any], run_dir: str,
                       budget: Budget, start_by: float, checkpoint_every: int, expected: float = 0.0) -> dict:
    """One fine-tune for `epochs` (a worker job): not started once `start_by` passed or when its `expected`
    seconds would end past the deadline, stopped between steps at the deadline (its checkpoints stay for
    a rerun), validation only (test is not opened). `target`: `finetune`'s target task and `settings`, the
    search's base `FinetuneSettings`, which the candidate's settings, epochs and checkpoint_every replace."""
    from pipeline.finetune import finetune

    now = budget.clock()
    if now >= min(start_by, budget.deadline) or now + expected > budget.deadline:
        return record(candidate, "skipped", None, 0.0, rung=rung, epochs=epochs)
    tuned, args = split_settings(candidate.params)  # e.g. lr, backbone_lr_mult; and mode, k, transfer
    settings = replace(target["settings"], epochs=epochs, checkpoint_every=checkpoint_every, **tuned)
    history: list[dict] = []
    start = time.perf_counter()
    try:
        # the one call into finetune: keyword arguments only, so a changed signature is fixed here
        result = finetune(**{**target, "settings": settings}, **args, out=run_dir,
                          progress=lambda step, total, metrics: budget.check(), on_epoch=history.append,
                          evaluate_test=False)
    except BudgetExhausted:
        best = max((h["val_accuracy"] for h in history), default=None)
        return record(candidate, "stopped", best, time.perf_counter() - start, rung=rung, epochs=epochs,
                      epochs_run=len(history), spent_at=budget.spent())
    return record(candidate, "done", result.best_val_accuracy, time.perf_counter() - start, rung=rung,
                  epochs=epochs, epochs_run=result.epochs_run, resumed_from=result.resumed_from,
                  model=str(result.backbone_path), spent_at=budget.spent())


def rung_epochs(epochs: int, eta: int) -> list[int]:
    """Successive halving's epochs per rung: epochs / eta^i for i = s..0, s = floor(log_eta(epochs))."""
    s = 0
    while eta ** (s + 1) <= epochs:
        s += 1
    return [max(1, round(epochs / eta ** (s - i))) for i in range(s + 1)]


def halving(candidates: Sequence[Candidate], *, epochs: int, eta: int, target: dict[str, Any], out: Path,
            budget: Budget, results: Results, workers: int, checkpoint_every: int,
            setup: Callable[[], None] | None = None) -> tuple[list[dict], list[str]]:
    """Successive halving over the fine-tunes, in the given order, in brackets until the budget ends.

    Rung i trains for rung_epochs(epochs, eta)[i] epochs. Rung 0 screens the candidates in order; each
    later rung continues with the best ceil(n / eta) of the n that finished the rung before (on
    validation accuracy). The budget left when a bracket starts is split evenly over its rungs (equal
    rungs are what n / eta^i runs of eta^i x the epochs cost): rung i starts no run once its
    cumulative share is spent (an unspent share rolls over), nor one whose price (the median seconds
    per epoch of the fine-tunes finished so far x its epochs) ends past the deadline, and any run stops
    at the deadline. Time left after the last rung starts another bracket on the candidates rung 0
    did not reach.
    Returns:
      (every rung's rows, what happened at each rung).
    """
    run = dict(epochs=epochs, eta=eta, target=target, out=out, budget=budget, results=results, workers=workers,
               checkpoint_every=checkpoint_every, setup=setup)
    rows, notes, pending = [], [], list(candidates)
    while pending:
        bracket, said = _bracket(pending, **run, history=rows)
        unreached = {r["name"] for r in bracket if r["rung"] == 0 and r["status"] == "skipped"}
        if len(unreached) == len(pending) or budget.clock() >= budget.deadline:
            return rows + bracket, notes + said  # nothing more can start: the skipped rows stay
        rows += [r for r in bracket if not (r["rung"] == 0 and r["name"] in unreached)]
        more = [f"{len(unreached)} not screened yet: another bracket with the time left."] if unreached else []
        notes += said + more
        pending = [c for c in pending if c.name in unreached]
    return rows, notes


def epoch_seconds(rows: Sequence[dict]) -> float:
    """The median seconds per epoch of the finished fine-tunes in `rows` (setup included); 0 without any."""
    costs = [r["seconds"] / r["epochs_run"] for r in rows if r["status"] == "done" and r.get("epochs_run")]
    return float(np.median(costs)) if costs else 0.0


def _bracket(candidates: Sequence[Candidate], *, epochs: int, eta: int, target: dict[str, Any], out: Path,
             budget: Budget, results: Results, workers: int, checkpoint_every: int,
             setup: Callable[[], None] | None, history: list[dict]) -> tuple[list[dict], list[str]]:
    """One bracket of successive halving over `candidates` with the budget left now (see `halving`);
    `history` (earlier brackets' rows) and its own finished rungs price each run before it starts."""
    rungs = rung_epochs(epochs, eta)
    begin, left = budget.clock(), budget.deadline - budget.clock()
    rows, notes, alive = [], [], list(candidates)
    for i, ep in enumerate(rungs):
        start_by = begin + left * (i + 1) / len(rungs)
        expected = epoch_seconds(history + rows) * ep
        jobs, done = [], {}
        for order, c in enumerate(alive):
            stored = results.get(f"{c.slug}.e{ep}")
            if stored is not None:
                done[c.name] = {**stored, "resumed": True}
                continue
            jobs.append(Job(c.name, finetune_candidate, cost=-order, kwargs=dict(
                candidate=c, rung=i, epochs=ep, target=target, run_dir=str(out / "runs" / c.slug / f"e{ep}"),
                budget=budget, start_by=start_by, checkpoint_every=checkpoint_every, expected=expected)))

        def keep(job: Job, row: dict, ep: int = ep) -> None:
            if row["status"] == "done":
                results.put(f"{job.kwargs['candidate'].slug}.e{ep}", row)

        done.update(run_jobs(jobs, workers, on_done=keep, setup=setup) if jobs else {})
        ranked = [done[c.name] for c in alive]
        rows += ranked
        finished = sorted((r for r in ranked if r["status"] == "done"), key=lambda r: -r["val_accuracy"])
        notes.append(f"Rung {i} ({ep} epoch{'s' * (ep > 1)}): {len(finished)} of {len(alive)} finished"
                     + (f", best {finished[0]['name']} at {finished[0]['val_accuracy']:.3f}" if finished else ""))
        if i + 1 == len(rungs) or not finished:
            break
        promoted = {r["name"] for r in finished[:math.ceil(len(finished) / eta)]}
        alive = [c for c in alive if c.name in promoted]
        notes[-1] += f"; {len(alive)} promoted: {', '.join(c.name for c in alive)}."
    return rows, notes
