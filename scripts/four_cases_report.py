"""The markdown report and the per-layer chart of `four_cases.py`, from its results dict (nothing is re-run)."""

from __future__ import annotations

from pathlib import Path

SEEDS_RECIPE = {("small", "similar"): "last-tap head", ("small", "different"): "early-tap head",
                ("large", "similar"): "fine-tune", ("large", "different"): "fine-tune or scratch"}


def _pm(cell: dict, recipe: str) -> str:
    return f"{cell['mean'][recipe]:.3f} ± {cell['std'][recipe]:.3f}"


def _grid_cell(cell: dict) -> str:
    lines = [(f"**{r}** " if r == cell["winner"] else f"{r} ") + _pm(cell, r) for r in cell["mean"]]
    return "<br>".join(lines + [f"transfer: {_transfer_score(cell['transfer'])}",
                                f"advisor: case {cell['advice']['case']} ({cell['advised']})"])


def _transfer_score(t: dict) -> str:
    """transfer's mean test accuracy over seeds (± std), or why there is none."""
    if t["mean"] is None:
        return "no candidate finished within the budget"
    return f"{t['mean']:.3f}" + ("" if len(t["runs"]) == 1 else f" ± {t['std']:.3f}")


def _transfer_row(name: str, best: str, best_acc: float, t: dict, recipes_seconds: list[float], extra: str) -> str:
    """One row of the transfer table: the best recipe, transfer's score, gap, picks and times per seed."""
    runs = t["runs"]
    picks = ", ".join(r["pick"] or "none" for r in runs)
    gap = "-" if t["gap"] is None else f"{t['gap']:+.3f}"
    spent = " / ".join(f"{r.get('seconds', 0):.0f}" for r in runs)
    budgets = " / ".join(f"{r['budget_seconds']:.0f}" for r in runs)
    recipes = " / ".join(f"{s:.0f}" for s in recipes_seconds)
    return (f"| {name} | {best} {best_acc:.3f} | {_transfer_score(t)} | {gap} | {'yes' if t['within'] else 'no'} "
            f"| {picks} | {recipes} | {budgets} | {spent} | {extra} |")


def _right(cell: dict) -> str:
    if cell["advised"] == cell["winner"] or cell["winner"] in cell["advised"].split(" or "):
        return "yes"
    return f"no (-{cell['regret']:.3f})"


def curve_png(curve: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"similar": "tab:blue", "different": "tab:red"}
    for sim, data in curve.items():
        n = [r["n"] for r in data["rows"]]
        ax.plot(n, [r["frozen"] for r in data["rows"]], "o-", color=colors[sim], label=f"{sim}: frozen transfer")
        ax.plot(n, [r["tuned"] for r in data["rows"]], "s--", color=colors[sim], label=f"{sim}: fine-tuned transfer")
        ax.axhline(data["alone"], color=colors[sim], linestyle=":", label=f"{sim}: trained on the target alone")
    ax.set(xlabel="layers copied from the source (cut after layer n)", ylabel="test accuracy",
           xticks=[r["n"] for r in next(iter(curve.values()))["rows"]],
           title="Per-layer transfer (Yosinski et al. 2014)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict, out: Path) -> list[Path]:
    """Writes OUT/report.md and OUT/transfer_curve.png; returns their paths."""
    cells = {(c["size"], c["sim"]): c for c in results["cells"] if not c.get("extra")}
    lines = [
        "# The four transfer-learning cases, measured", "",
        f"`scripts/four_cases.py` ({results['mode']} mode): source `{results['backbone']}` pre-trained on "
        f"Fashion-MNIST classes 0-4 (test accuracy {results['sources']['0-4']['test_accuracy']:.3f}; the two "
        f"extra targets: on 5-9, {results['sources']['5-9']['test_accuracy']:.3f}); "
        f"{results['seeds']} seeds per cell; "
        + (f"whole run {results['seconds'] / 60:.1f} min. " if not results.get("kept_runs") else
           f"this invocation {results['seconds'] / 60:.1f} min, continuing {results['kept_runs']} runs stored by "
           "earlier ones. ") +
        "Test accuracy, mean ± std over seeds; the best recipe of a cell in bold.", "",
        "## The 2x2 table", "",
        "| | similar (Fashion-MNIST 5-9) | different (small: digits; large: 5-9 with shuffled patches) |",
        "|---|---|---|",
    ]
    for size in ("small", "large"):
        lines.append(f"| **{size}** | " + " | ".join(_grid_cell(cells[size, sim]) for sim in ("similar", "different"))
                     + " |")
    recipes = list(results["cells"][0]["mean"])
    lines += ["", "## Per cell: every recipe, the seeds' pick, the advisor's, the measured winner", "",
              "| cell | data | training images | " + " | ".join(recipes)
              + " | seeds' recipe | advisor | measured winner | advisor right? |",
              "|---|---|---|" + "---|" * (len(recipes) + 4)]
    for c in results["cells"]:
        a = c["advice"]
        data = c["dataset"].split("/")[-1] + (f" {c['classes'][0]}-{c['classes'][-1]}" if c["classes"] else "")
        lines.append(f"| {c['name']} | {data} | {c['n_train']} | " + " | ".join(_pm(c, r) for r in recipes)
                     + f" | {SEEDS_RECIPE[c['size'], c['sim']]} | case {a['case']} ({a['size']} + "
                     f"{a['similarity']}, cut at {a['tap']}) | {c['winner']} | {_right(c)} |")
    lines += ["", "## `transfer` against every recipe", "",
              f"`transfer` per cell and seed with a budget of {results['transfer_share']:g} x the seconds all the "
              "cell's recipes took for that seed (its own feature store: nothing cached for it). Goal: its pick's "
              "mean test accuracy at most 0.005 below the best recipe's; gap = best recipe - transfer (negative: "
              "transfer's pick scored higher). Seconds per seed.", "",
              "| cell | best recipe | transfer | gap | within 0.005? | transfer's picks | recipes s | budget s "
              "| transfer spent s | seeds' recipe / advisor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        lines.append(_transfer_row(c["name"], c["winner"], c["mean"][c["winner"]], c["transfer"],
                                   c["recipes_seconds"],
                                   f"{SEEDS_RECIPE[c['size'], c['sim']]} / case {c['advice']['case']}"))
    for r in (r for r in results["real_world"] if r["transfer"] is not None):
        scores = {k: r[k] for k in ("last-tap head", "early-tap head", "fine-tune") if k in r}
        best = max(scores, key=scores.get)
        lines.append(_transfer_row(f"{results['config']['real'][0]}: {r['dataset']} {r['size']}", best, scores[best],
                                   r["transfer"], [r["recipes seconds"]], f"- / case {r['advised case']}"))
    lines += ["", "Advisor measurements (linear-probe validation accuracy per tap; BN shift = distance of the "
              "target's activation statistics from the source's BatchNorm statistics, in source standard "
              "deviations):", "",
              "| cell | " + " | ".join(r["tap"] for r in results["cells"][0]["advice"]["taps"]) + " |",
              "|---|" + "---|" * len(results["cells"][0]["advice"]["taps"])]
    for c in results["cells"]:
        lines.append(f"| {c['name']} | " + " | ".join(
            f"{r['probe_val_accuracy']:.3f}" + ("" if r["bn_shift"] is None else f" (shift {r['bn_shift']:.2f})")
            for r in c["advice"]["taps"]) + " |")
    curve = results["curve"]
    lines += ["", "## Per-layer transfer curve", "",
              "Cut after layer n: layers 1..n copied from the source; frozen transfer trains only the new "
              "layers above, fine-tuned transfer trains all at one learning rate; the baseline is the same "
              "network trained on the target alone. Every run: no augmentation, BatchNorm statistics fixed, "
              "the learning rate (1e-3 or 1e-2) picked on validation. Test accuracy (one seed).", "",
              "![per-layer transfer](transfer_curve.png)", "",
              "| n | " + " | ".join(f"{s} frozen | {s} fine-tuned" for s in curve) + " |",
              "|---|" + "---|---|" * len(curve)]
    for i, row in enumerate(next(iter(curve.values()))["rows"]):
        lines.append(f"| {row['n']} | " + " | ".join(f"{d['rows'][i]['frozen']:.3f} | {d['rows'][i]['tuned']:.3f}"
                                                    for d in curve.values()) + " |")
    lines.append("| alone | " + " | ".join(f"{d['alone']:.3f} | {d['alone']:.3f}" for d in curve.values()) + " |")
    if results["real_world"]:
        keys = ["last-tap head", "early-tap head", "fine-tune"]
        lines += ["", "## Real-world row: ImageNet weights", "",
                  f"`{results['config']['real'][0]}` at {results['config']['real'][1]} px; one seed; fine-tuning "
                  "(case 3: lp-ft, 3 epochs) on every target but all of Fashion-MNIST (a CPU cannot fine-tune it on "
                  "54k images in this budget), and not from scratch (3 epochs on 1,000 images left it at chance on validation).", "",
                  "| data | size | training images | " + " | ".join(keys) + " | early tap | advisor |",
                  "|---|---|---|" + "---|" * (len(keys) + 2)]
        for r in results["real_world"]:
            lines.append(f"| {r['dataset']} | {r['size']} | {r['n_train']} | "
                         + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in keys)
                         + f" | {r['early tap']} | case {r['advised case']} |")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return [report, curve_png(curve, out / "transfer_curve.png")]


if __name__ == "__main__":  # re-render a finished run: python scripts/four_cases_report.py OUT/results.json
    import json
    import sys

    path = Path(sys.argv[1])
    for written in write_report(json.loads(path.read_text()), path.parent):
        print(f"wrote {written}")
