"""The recipes `transfer` searches over (candidate families), and the order it tries the costly ones in,
from what the advisor measures: probe accuracy and LogME per tap, BatchNorm shift, images per class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.finetune.settings import FinetuneSettings

# family -> what it trains; the first four are frozen (heads on cached features), the rest fine-tune
FAMILIES = {
    "ridge": "ridge classifier on each feature tap, every L2 value from one eigendecomposition",
    "linear": "linear head on each feature tap: L-BFGS (LogisticRegression's objective), and AdamW at each rate",
    "mlp": "one-hidden-layer MLP head on each feature tap",
    "concat": "ridge and linear head on every feature tap concatenated",
    "last-k": "fine-tune the last k stages before the classifier (k = 1, 2), the rest frozen",
    "lp-ft": "linear probe, then fine-tune everything, backbone at 0.1x and 1x the head's rate",
    "full": "new random classifier, fine-tune everything, backbone at 0.1x the head's rate",
    "transfer": "copy the stages up to the best frozen tap, re-initialise the rest, fine-tune everything",
    "scratch": "the same network from random init",
}
FROZEN = ("ridge", "linear", "mlp", "concat")
HEAD_LRS = {"linear": (3e-3, 3e-2), "mlp": (1e-3, 1e-2)}  # each head's grid, its usual rate first
FINETUNE_LRS = (1e-3, 3e-3)  # the head's peak rate in a fine-tune (the backbone's is it times mult)
LAST_K = (1, 2)
LP_FT_MULTS = (0.1, 1.0)
FULL_MULT = FinetuneSettings().backbone_lr_mult  # full fine-tunes at the default backbone rate
RIDGE_L2S = tuple(float(v) for v in (10.0 ** (i / 2) for i in range(-6, 11)))  # 1e-3 .. 1e5
LARGE_PER_CLASS = 1000  # median images per class from which a data set is large (advisor, transfer's order)
BN_SHIFT_FAR = 1.0  # source standard deviations: early statistics this far off, freezing them is tried late


@dataclass(frozen=True)
class Candidate:
    """One recipe with its settings: `params` holds tap/taps and lr or l2s (frozen), or mode, lr and
    k / backbone_lr_mult / transfer (fine-tunes: `finetune`'s mode, k, transfer and `FinetuneSettings` fields)."""

    family: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def frozen(self) -> bool:
        return self.family in FROZEN

    @property
    def slug(self) -> str:
        """The name as a file name."""
        return "".join(c if c.isalnum() or c in "-." else "_" for c in self.name)


@dataclass(frozen=True)
class Evidence:
    """What the frozen phase (or the advisor) measured; orders the costly candidates."""

    probe: dict[str, float]  # per feature tap, in order: a linear probe's validation accuracy
    early: list[str]  # the early feature taps
    bn_shift: dict[str, float | None] = field(default_factory=dict)
    logme: dict[str, float] = field(default_factory=dict)
    median_per_class: float = 0.0


def check_families(families: Sequence[str] | None) -> list[str]:
    """The chosen families in FAMILIES' order; unknown names are a ValueError listing the valid ones."""
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str) or not families:
        raise ValueError(f"candidates must be a non-empty list of names; valid: {', '.join(FAMILIES)}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown candidate {', '.join(map(repr, unknown))}; valid: {', '.join(FAMILIES)}")
    return [f for f in FAMILIES if f in families]


def check_lrs(lrs: Sequence[float]) -> tuple[float, ...]:
    """A non-empty grid of positive, finite learning rates."""
    values = tuple(lrs) if not isinstance(lrs, (str, bytes)) else ()
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")
                         for v in values):
        raise ValueError(f"learning rates must be a non-empty list of positive numbers, got {lrs!r}")
    return tuple(float(v) for v in values)


def frozen_candidates(families: Sequence[str], taps: Sequence[str]) -> list[Candidate]:
    """Every frozen candidate: each tap's ridge, then each tap's linear heads (L-BFGS, then AdamW at each
    rate) and MLP heads (each rate), then the concatenation's ridge and linear heads."""
    out = [Candidate("ridge", f"ridge@{tap}", {"taps": [tap], "l2s": list(RIDGE_L2S)})
           for tap in taps if "ridge" in families]
    for tap in taps:
        if "linear" in families:
            out.append(Candidate("linear", f"linear@{tap}", {"taps": [tap], "head": "linear"}))
        for head in ("linear", "mlp"):
            if head in families:
                out += [Candidate(head, f"{head}@{tap} lr={lr:g}", {"taps": [tap], "head": head, "lr": lr})
                        for lr in HEAD_LRS[head]]
    if "concat" in families and len(taps) > 1:
        out.append(Candidate("concat", "ridge@concat", {"taps": list(taps), "l2s": list(RIDGE_L2S)}))
        out += [Candidate("concat", f"linear@concat lr={lr:g}", {"taps": list(taps), "head": "linear", "lr": lr})
                for lr in HEAD_LRS["linear"]]
    return out


def by_probe(candidates: Sequence[Candidate], probe: dict[str, float]) -> list[Candidate]:
    """The candidates on the single taps the probe scored best first (stable: ties keep their order), then
    the rest (unprobed taps, concatenations): cheap evidence orders the dearer fits."""
    def key(c: Candidate) -> tuple[bool, float]:
        taps = c.params["taps"]
        return len(taps) > 1 or taps[0] not in probe, -probe.get(taps[0], 0.0)
    return sorted(candidates, key=key)


def _variants(family: str, evidence: Evidence, stages: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, settings) of a costly family's variants, before the learning-rate grid."""
    if family == "last-k":
        return [(f"last-k k={k}", {"mode": "last-k", "k": k}) for k in LAST_K if k <= stages]
    if family == "lp-ft":
        return [(f"lp-ft x{m:g}", {"mode": "lp-ft", "backbone_lr_mult": m}) for m in LP_FT_MULTS]
    if family == "full":
        return [(f"full x{FULL_MULT:g}", {"mode": "full", "backbone_lr_mult": FULL_MULT})]
    if family == "transfer":
        cut = transfer_cut(evidence)
        return [(f"transfer N={cut}", {"mode": "full", "transfer": cut, "backbone_lr_mult": FULL_MULT})]
    return [("scratch", {"mode": "scratch"})]


def transfer_cut(evidence: Evidence) -> int:
    """Yosinski's cut: copy the stages up to the best-probed tap below the last (N = its position + 1)."""
    taps = list(evidence.probe)
    below = taps[:-1] or taps
    return taps.index(max(below, key=evidence.probe.get)) + 1


def family_order(families: Sequence[str], evidence: Evidence,
                 large_per_class: int = LARGE_PER_CLASS) -> tuple[list[str], list[str]]:
    """The costly families in the order they are screened, and why.

    Rule: the advisor's similarity test (probe on the last feature tap >= the best early tap) picks
    the base order; similar: lp-ft, last-k, full, transfer, scratch (keep what the source learned);
    different: transfer, lp-ft, full, last-k, scratch (re-learn the late layers). Large data
    (median >= large_per_class per class) moves scratch to second; early BatchNorm statistics more
    than BN_SHIFT_FAR source standard deviations off move last-k (which freezes them) to the end.
    """
    taps = list(evidence.probe)
    last = taps[-1]
    early = [t for t in evidence.early if t in evidence.probe] or taps[:1]
    best_early = max(early, key=evidence.probe.get)
    similar = evidence.probe[last] >= evidence.probe[best_early]
    order = (["lp-ft", "last-k", "full", "transfer", "scratch"] if similar else
             ["transfer", "lp-ft", "full", "last-k", "scratch"])
    reasons = [f"A linear probe on {last} scores {evidence.probe[last]:.3f} on validation, "
               f"{'at least' if similar else 'below'} the best early tap {best_early} "
               f"({evidence.probe[best_early]:.3f}): the target is {'similar' if similar else 'different'}, so "
               + ("recipes that keep the pre-trained layers go first." if similar else
                  "recipes that re-learn the late layers go first.")]
    if evidence.logme:
        top = max(evidence.logme, key=evidence.logme.get)
        reasons.append(f"LogME ranks {top} first ({evidence.logme[top]:.3f}); transfer cuts after "
                       f"{taps[transfer_cut(evidence) - 1]}, the best-probed tap below the last.")
    if evidence.median_per_class >= large_per_class:
        order.remove("scratch")
        order.insert(1, "scratch")
        reasons.append(f"Median {evidence.median_per_class:.0f} images per class (>= {large_per_class}): "
                       "enough to learn from random init, so scratch is screened second.")
    shifts = [s for t, s in evidence.bn_shift.items() if t in early and s is not None]
    if shifts and max(shifts) > BN_SHIFT_FAR:
        order.remove("last-k")
        order.append("last-k")
        reasons.append(f"Early BatchNorm statistics are {max(shifts):.2f} source standard deviations off "
                       f"(> {BN_SHIFT_FAR}): freezing the early layers (last-k) is screened late.")
    return [f for f in order if f in families], reasons


def costly_candidates(families: Sequence[str], evidence: Evidence, stages: int,
                      lrs: Sequence[float] = FINETUNE_LRS) -> tuple[list[Candidate], list[str]]:
    """The fine-tune candidates in screening order (each variant at its first learning rate in family
    order, then the same at the next rate, ...), and the reasons for the order.

    Args:
      families: chosen families; evidence: the measurements; stages: stages before the classifier;
      lrs: the learning-rate grid.
    """
    order, reasons = family_order([f for f in families if f not in FROZEN], evidence)
    variants = [(family, name, settings) for family in order for name, settings in _variants(family, evidence, stages)]
    out = [Candidate(family, f"{name} lr={lr:g}", {**settings, "lr": lr})
           for lr in lrs for family, name, settings in variants]
    return out, reasons
