"""`transfer(backbone, dataset, budget=MINUTES)`: the best transfer recipe for a data set within a time
budget, found by measuring every recipe the budget allows rather than by the four-cases table.

The search rule:

1. Frozen phase (nearly free once cached): one extraction pass caches every feature tap of the train
   and val splits ('grid' pooling for spatial taps). Cheapest evidence first: ridge over RIDGE_L2S on
   each tap (one eigendecomposition each of train alone; a winning ridge is refit on train + val),
   then, taps with the best ridge score first, a linear head by L-BFGS (LogisticRegression's objective)
   and at each AdamW rate of its grid and an MLP head at each rate of its grid; then ridge and a linear
   head on all taps concatenated. Measured too, when time is left for fine-tunes: LogME per tap, and the
   BatchNorm-statistics shift.
2. Costly phase: the fine-tunes (last-k for k = 1, 2; lp-ft at 0.1x and 1x; full; transfer N; scratch;
   each at every rate of FINETUNE_LRS), ordered by `candidates.family_order` from those measurements,
   go through successive halving with eta = 3: with E epochs (default 9), rungs train E/9, E/3 and E
   epochs; rung 0 screens candidates in order, each rung keeps the best third on validation for the
   next. The budget left after the frozen phase is split evenly over the rungs (rung i starts no run
   after its cumulative share; unspent time rolls over); time left after the last rung starts another
   bracket on the candidates rung 0 did not reach.
3. Decisions read the validation split only. The winner (`search.pick`): of the finished candidates
   (any rung) within one binomial standard error of the best validation accuracy, the simplest (family
   order: ridge, linear, mlp, concat, then the fine-tunes; then the higher score). It is saved (ridge
   refit on train + val at its L2, a head as fitted, or refit after a resume) or taken as exported (a fine-tune) into OUT/final, and only
   then is the test split read, once, for the winner.

The budget bounds wall time: no candidate starts after the deadline, nor a fine-tune whose price (the
median seconds per epoch of those finished so far x its epochs) would end past it; a running fine-tune
stops at its next step (its checkpoints stay, so a rerun resumes it), and what finished decides. The
overrun is at most one uninterruptible piece: an extraction pass, a head fit, or a fine-tune's setup and
first compiled step; plus the winner's refit (ridge, or a head after a resume) and test pass. When the
extraction pass alone outlasts the budget, the first frozen candidate (the first tap's ridge) still runs,
so a search with a frozen family always returns a model. A rerun with the same
OUT skips every finished candidate (OUT/candidates/*.json, written atomically; a fine-tune's result is
kept per epoch count); an OUT holding a search of another task or source is refused.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline import backbones
from pipeline.data import Geometry, open_source
from pipeline.extract import extract
from pipeline.finetune import FinetuneSettings
from pipeline.heads import fit_ridge, logme, reduce_spatial
from pipeline.store import load
from pipeline.strategy import candidates as cands
from pipeline.strategy.recipes import early_taps, feature_taps
from pipeline.strategy.report import write_report
from pipeline.strategy.search import Budget, Results, fit_frozen, halving, pick, run_frozen, stack

ETA = 3


@dataclass(frozen=True)
class TransferResult:
    """The winner, how it scored, and every candidate tried."""

    winner: str
    family: str
    val_accuracy: float
    test_accuracy: float
    model: Path  # OUT/final/head.safetensors or OUT/final/backbone.safetensors
    leaderboard: list[dict[str, Any]]  # per candidate and rung: name, family, params, status, val_accuracy, ...
    reasons: list[str]
    budget_seconds: float
    seconds: float  # wall time this call spent
    out: Path

    def summary(self) -> dict[str, Any]:
        """Plain values for `--json`."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def transfer(backbone: str, dataset: str, *, budget: float, weights: str | Path = "pretrained",
             classes: Sequence[int] | None = None, per_class: int | None = None, limit: int | None = None,
             candidates: Sequence[str] | None = None, finetune_lrs: Sequence[float] = cands.FINETUNE_LRS,
             epochs: int = 9, batch_size: int = FinetuneSettings.batch_size,
             resolution: int | None = None, workers: int = 1, seed: int = 0, cache_dir: str | Path | None = None,
             out: str | Path | None = None, clock: Callable[[], float] = time.time,
             setup: Callable[[], None] | None = None) -> TransferResult:
    """Searches the transfer recipes for `dataset` within `budget` minutes (see the module docstring).

    Args:
      backbone, weights: the source network ('pretrained' or a checkpoint path).
      dataset, classes, per_class, limit, seed: the target task (see `pipeline.data.open_source`); train
        trains, val decides, test scores the winner once. per_class and limit select the training subset.
      budget: wall-clock minutes (> 0) for the whole search.
      candidates: families to search (default all of `candidates.FAMILIES`).
      finetune_lrs: every fine-tune's learning-rate grid (the head's peak rate).
      epochs: fine-tunes' epochs at the last rung; batch_size: theirs. resolution: input side.
      workers: processes for the fine-tunes of a rung (`pipeline.jobs.run_jobs`; setup runs in each).
      cache_dir: the feature store. out: run directory (default runs/<timestamp>-transfer); a rerun
        with the same one resumes. clock: the budget's clock in seconds (wall time; picklable when
        workers > 1); the reported seconds are on it.
    Returns:
      TransferResult; OUT holds leaderboard.json, leaderboard.md, chart.png and final/.
    """
    timer = Budget.minutes(budget, clock)
    families = cands.check_families(candidates)
    finetune_lrs = cands.check_lrs(finetune_lrs)
    base = FinetuneSettings(epochs=epochs, batch_size=batch_size)  # checked before any work; each rung sets epochs
    out = Path(out) if out is not None else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-transfer"
    results = Results(out, dict(backbone=backbone, weights=weights, dataset=dataset, classes=classes,
                                per_class=per_class, limit=limit, seed=seed, resolution=resolution,
                                batch_size=batch_size))
    model = backbones.create(backbone, weights)
    taps, early = feature_taps(model), early_taps(model)
    subset = dict(classes=classes, per_class=per_class, limit=limit, seed=seed)
    splits = {"train": subset, "val": dict(classes=classes, seed=seed)}
    common = dict(weights=weights, pool="grid", resolution=resolution, cache_dir=cache_dir)
    feats = {}
    for split, data in splits.items():
        entry = extract(backbone, dataset, taps, split=split, **common, **data).entry
        feats[split] = ({t: reduce_spatial(load(entry, t)[0], "flatten") for t in taps}, load(entry, taps[0])[1])

    late = timer.clock() >= timer.deadline  # the extraction pass took the whole budget
    frozen, fitted = run_frozen(cands.frozen_candidates(families, taps), feats["train"], feats["val"], timer,
                                results, seed)
    costly, reasons = [], []
    if any(f not in cands.FROZEN for f in families):
        if timer.clock() < timer.deadline:
            evidence = _evidence(model, frozen, feats, taps, early, dataset, subset, resolution)
            costly, reasons = cands.costly_candidates(families, evidence, len(model.tap_names()) - 1, finetune_lrs)
        else:
            reasons = ["The budget ended in the frozen phase: no fine-tune was screened."]
    target = dict(backbone=backbone, dataset=dataset, weights=weights, resolution=resolution, seed=seed,
                  classes=classes, per_class=per_class, limit=limit, settings=base)
    steps_per_epoch = max(1, len(feats["train"][1]) // batch_size)
    rows, notes = halving(costly, epochs=epochs, eta=ETA, target=target, out=out, budget=timer, results=results,
                          workers=workers, checkpoint_every=steps_per_epoch, setup=setup) if costly else ([], [])
    board = frozen + rows
    finished = [r for r in board if r["status"] == "done"]
    if not finished:
        raise TimeoutError(f"the budget of {budget} minutes ended before any candidate finished; "
                           f"rerun with the same --out to resume, or give a larger budget")
    best, why = pick(finished, len(feats["val"][1]))
    test_accuracy, path = _final(best, fitted, backbone, dataset, feats, common, classes, seed, out)
    reasons = ([f"Frozen phase: {sum(r['status'] == 'done' for r in frozen)} of {len(frozen)} candidates on "
                f"{len(taps)} cached taps."]
               + ([f"The extraction pass outlasted the budget; {frozen[0]['name']} ran anyway so that the "
                   "features give a model."] if late and frozen else [])
               + reasons + notes
               + [why + f" Test accuracy, read once for it: {test_accuracy:.4f}."])
    result = TransferResult(best["name"], best["family"], best["val_accuracy"], test_accuracy, path, board, reasons,
                            timer.seconds, timer.spent(), out)
    write_report(result.summary(), out)
    return result


def _evidence(model, frozen: list[dict], feats: dict, taps: list[str], early: list[str], dataset: str,
              subset: dict, resolution: int | None) -> cands.Evidence:
    """Probe accuracy per tap (the best finished single-tap frozen fit, else a ridge sweep), LogME per
    tap, the BatchNorm shift on at most 1000 training images, and the median images per class."""
    from pipeline.data import load_split
    from pipeline.strategy.similarity import bn_shift

    (train, y), (val, yv) = feats["train"], feats["val"]
    probe = {}
    for tap in taps:
        scores = [r["val_accuracy"] for r in frozen if r["status"] == "done" and r["params"]["taps"] == [tap]]
        probe[tap] = max(scores) if scores else fit_ridge(train[tap], y, val[tap], yv, cands.RIDGE_L2S).score(
            val[tap], yv)
    p = model.preprocessing
    images, _ = load_split(open_source(dataset, "train", **{**subset, "limit": min(subset["limit"] or 1000, 1000)}),
                           Geometry(resolution or p.resolution, p.resize, p.resample))
    counts = np.bincount(y)
    return cands.Evidence(probe, early, bn_shift(model, images, resolution=resolution),
                          {t: logme(train[t], y) for t in taps}, float(np.median(counts[counts > 0])))


def _final(best: dict, fitted: dict, backbone: str, dataset: str, feats: dict, common: dict, classes, seed: int,
           out: Path) -> tuple[float, Path]:
    """The winner in OUT/final (a head as fitted in this call, else fitted again: ridge always, on train +
    val; a fine-tune: its export), and its test accuracy: the only read of the test split."""
    final = out / "final"
    final.mkdir(parents=True, exist_ok=True)
    test = dict(split="test", classes=classes, seed=seed)
    if best["family"] in cands.FROZEN:
        c = cands.Candidate(best["family"], best["name"], best["params"])
        model = fitted[c.name] if c.name in fitted else fit_frozen(c, feats["train"], feats["val"], seed)[0]
        entry = extract(backbone, dataset, c.params["taps"], **common, **test).entry
        x = stack({t: reduce_spatial(load(entry, t)[0], "flatten") for t in c.params["taps"]}, c.params["taps"])
        accuracy = float(model.score(x, load(entry, c.params["taps"][0])[1]))
        path = _save_frozen(model, final / "head.safetensors", {**best, "test_accuracy": accuracy})
        return accuracy, path
    path = Path(shutil.copy(best["model"], final / "backbone.safetensors"))
    tuned = backbones.create(backbone, path)
    logits = tuned.tap_names()[-1]
    entry = extract(backbone, dataset, [logits], **{**common, "weights": path, "pool": "avg"}, **test).entry
    x, y = load(entry, logits)
    return float(np.mean(np.argmax(x, axis=1) == y)), path


def _save_frozen(model, path: Path, info: dict) -> Path:
    """A head as its `save` writes it; a ridge model as its coef/intercept/classes arrays."""
    if hasattr(model, "save"):
        return model.save(path, info)
    from pipeline.weights import save_params

    save_params(path, {"coef": model.coef_, "intercept": model.intercept_, "classes": model.classes_},
                {"format": "pipeline.ridge/1", "info": json.dumps(info, default=str)})
    return path
