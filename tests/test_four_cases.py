"""scripts/four_cases.py --quick: the experiment's whole code path; the report's numbers come from the run."""

import json

import numpy as np
import pytest

from pipeline.data import FASHION_DIR, open_source
from scripts import four_cases
from scripts.four_cases_report import write_report

# the experiment's source and similar target are real Fashion-MNIST (Debian's dataset-fashion-mnist; CI installs it)
# xdist_group: the quick run keeps both cores busy; the suite's other worker never runs it beside the Ray tests
pytestmark = [pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed"),
              pytest.mark.xdist_group("whole-machine")]


def test_patch_permutation_moves_whole_patches(tmp_path):
    spec = four_cases.fashion_npz(tmp_path, seed=1)
    with np.load(spec.removeprefix("npz:")) as data:
        shuffled, labels = data["images"], data["labels"]
    first = next(open_source("fashion-mnist", "trainval", classes=four_cases.SIMILAR).iter_batches(1)).images[0, ..., 0]
    tiles = {first[r:r + 7, c:c + 7].tobytes() for r in range(0, 28, 7) for c in range(0, 28, 7)}
    moved = {shuffled[0, r:r + 7, c:c + 7].tobytes() for r in range(0, 28, 7) for c in range(0, 28, 7)}
    assert moved == tiles and not np.array_equal(shuffled[0], first)  # same 16 patches, other places
    assert len(shuffled) == len(labels) == 35000 and set(np.unique(labels)) == set(range(5))
    # quick mode's cut: the first 3 images of each class, in file order, unshuffled
    with np.load(four_cases.fashion_npz(tmp_path, "0-4", patch=None, per_class=3).removeprefix("npz:")) as data:
        cut, cut_labels = data["images"], data["labels"]
    whole = next(open_source("fashion-mnist", "trainval", classes=[0, 1, 2, 3, 4]).iter_batches(60000))
    expected = np.sort(np.concatenate([np.flatnonzero(whole.labels == c)[:3] for c in range(5)]))
    np.testing.assert_array_equal(cut, whole.images[expected, ..., 0])
    np.testing.assert_array_equal(cut_labels, whole.labels[expected])


def test_quick_run_reports_the_numbers_it_measured(tmp_path):
    assert four_cases.main(["--quick", "--seeds", "1", "--no-real-world", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert [c["name"] for c in results["cells"]] == ["small + similar", "small + different",
                                                     "small + different (patches)", "large + similar",
                                                     "large + different", "small, source 5-9: Fashion-MNIST 0-4",
                                                     "large, source 5-9: 0-4 patches"]
    assert set(results["sources"]) == {"0-4", "5-9"}
    for cell in results["cells"]:
        for recipe, scores in cell["scores"].items():
            assert len(scores) == 1 and all(0.0 <= s <= 1.0 for s in scores)
            assert cell["mean"][recipe] == np.mean(scores) and f"{np.mean(scores):.3f} ± 0.000" in report
        assert cell["winner"] == max(cell["mean"], key=cell["mean"].get)
        t = cell["transfer"]  # quick mode: ridge only, 15 s or a quarter of the recipes' seconds
        (run,) = t["runs"]
        assert run["pick"].startswith("ridge@") and run["budget_seconds"] == pytest.approx(
            max(15.0, cell["recipes_seconds"][0] / 4), rel=1e-12)
        assert t["mean"] == run["test_accuracy"] and t["gap"] == cell["mean"][cell["winner"]] - t["mean"]
        assert f"| {cell['name']} | {cell['winner']} {cell['mean'][cell['winner']]:.3f} | {t['mean']:.3f} |" in report
        assert (tmp_path / "advice" / f"{cell['name']}.json").is_file()
    curve = results["curve"]
    assert [r["n"] for r in curve["similar"]["rows"]] == [1, 5]
    row = curve["different"]["rows"][-1]
    assert f"| 5 | {curve['similar']['rows'][-1]['frozen']:.3f} |" in report and f"{row['tuned']:.3f} |" in report
    assert (tmp_path / "transfer_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = report
    write_report(results, tmp_path)  # re-rendering from results.json gives the same report
    assert (tmp_path / "report.md").read_text() == before
    assert results["kept_runs"] == 0 and "whole run" in report
    # a rerun with the same OUT continues: every run (the sources too) is read back, none computed again
    stored = len(list((tmp_path / "jobs").glob("*.pkl")))
    assert four_cases.main(["--quick", "--seeds", "1", "--no-real-world", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["kept_runs"] == stored == len(list((tmp_path / "jobs").glob("*.pkl")))
    assert [c["mean"] for c in again["cells"]] == [c["mean"] for c in results["cells"]]
    assert f"continuing {stored} runs stored by earlier ones" in (tmp_path / "report.md").read_text()


def test_a_bad_job_count_is_refused_before_any_work(tmp_path, capsys):
    cores = len(four_cases.available_cores())
    with pytest.raises(SystemExit):
        four_cases.main(["--quick", "--jobs", str(cores + 1), "--out", str(tmp_path)])
    assert f"--jobs: jobs must be an integer from 1 to the {cores} available cores, got {cores + 1}" in capsys.readouterr().err
    assert not (tmp_path / "source").exists()
