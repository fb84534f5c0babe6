"""`transfer`'s report: the leaderboard as JSON and markdown, and validation score against time spent as a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def leaderboard_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard's rows, best validation accuracy first, each with the share of the budget it used."""
    rows = [{**r, "budget_fraction": r["seconds"] / summary["budget_seconds"]} for r in summary["leaderboard"]]
    return sorted(rows, key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0.0), r["seconds"]))


def markdown(summary: dict[str, Any]) -> str:
    """The leaderboard as a markdown table, then the reasons."""
    lines = [f"# transfer: {summary['winner']} wins",
             "",
             f"Validation accuracy {summary['val_accuracy']:.4f}, test accuracy {summary['test_accuracy']:.4f} "
             f"(read once). Spent {summary['seconds']:.0f} s of a {summary['budget_seconds']:.0f} s budget. "
             f"Final model: `{summary['model']}`.",
             "",
             "| candidate | family | rung | status | val accuracy | seconds | budget fraction |",
             "|---|---|---|---|---|---|---|"]
    for r in leaderboard_rows(summary):
        rung = "frozen" if r.get("rung") is None else f"{r['rung']} ({r['epochs']} ep)"
        lines.append(f"| {r['name']} | {r['family']} | {rung} | {r['status']}{' (resumed)' * r.get('resumed', False)}"
                     f" | {_fmt(r['val_accuracy'])} | {r['seconds']:.1f} | {r['budget_fraction']:.3f} |")
    lines += ["", "## Reasons", ""] + [f"- {reason}" for reason in summary["reasons"]]
    return "\n".join(lines) + "\n"


def chart(summary: dict[str, Any], path: Path) -> Path:
    """Each finished or stopped run's validation accuracy at the cumulative run time when it ended
    (runs in the order they ran), with the best so far as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    elapsed, best, xs, ys = 0.0, None, [], []
    for r in summary["leaderboard"]:
        elapsed += r["seconds"]
        if r["val_accuracy"] is None:
            continue
        frozen = r.get("rung") is None
        ax.scatter(elapsed, r["val_accuracy"], marker="o" if frozen else "s", s=18,
                   color="tab:blue" if frozen else "tab:orange", alpha=0.7 if r["status"] == "done" else 0.3)
        if r["status"] == "done":
            best = r["val_accuracy"] if best is None else max(best, r["val_accuracy"])
            xs.append(elapsed)
            ys.append(best)
    ax.step(xs, ys, where="post", color="black", label="best so far")
    ax.scatter([], [], marker="o", color="tab:blue", label="frozen")
    ax.scatter([], [], marker="s", color="tab:orange", label="fine-tune")
    ax.set(xlabel="time spent on candidates (s)", ylabel="validation accuracy", title=f"winner: {summary['winner']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(summary: dict[str, Any], out: Path) -> None:
    """OUT/leaderboard.json, OUT/leaderboard.md and OUT/chart.png."""
    (out / "leaderboard.json").write_text(json.dumps({**summary, "leaderboard": leaderboard_rows(summary)},
                                                     indent=2, default=str))
    (out / "leaderboard.md").write_text(markdown(summary))
    chart(summary, out / "chart.png")
