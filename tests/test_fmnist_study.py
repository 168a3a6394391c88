"""The Fashion-MNIST study's runner and report: real tiny runs, and the committed results."""
import json
import shutil
import statistics
from pathlib import Path

import pytest

from experiments import fmnist_report, fmnist_setup, fmnist_study
from tests.helpers import ROOT, read_csv, tiny, tool

FASHION = Path("/usr/share/datasets/fashion-mnist")
# A budget for the study: TINY's networks for one epoch; the study sets the dataset, classes and seeds.
BUDGET = [*tiny(dataset=None, abnormal_class=None, manualseed=None, print_freq=None, save_image_freq=None,
                batchsize=512), "--niter", "1", "--dataroot", str(FASHION), *fmnist_setup.STUDY_FIXES]


def test_the_study_page_is_exactly_what_the_committed_result_files_give(tmp_path):
    """Rebuilding from results/ alone (a fresh clone has no run folders) changes nothing."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "fmnist", results)
    page = tmp_path / "fmnist_study.md"
    shutil.copy(fmnist_study.STUDY_PAGE, page)
    assert fmnist_report.BEGIN in page.read_text()
    flags = " ".join(fmnist_setup.BUDGETS["cpu"])
    fmnist_report.write_report(tmp_path / "no-runs", results, page, "cpu", flags)
    assert page.read_text() == fmnist_study.STUDY_PAGE.read_text()
    for path in results.iterdir():
        assert path.read_text() == (ROOT / "results" / "fmnist" / path.name).read_text(), path.name


@pytest.mark.dataset
@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_real_runs_reach_the_tables_and_survive_losing_their_folders(tmp_path, monkeypatch):
    monkeypatch.setitem(fmnist_setup.BUDGETS, "tiny", BUDGET)
    out, results = tmp_path / "runs", tmp_path / "results"
    results.mkdir()
    page = tmp_path / "fmnist_study.md"
    page.write_text(f"intro\n{fmnist_report.BEGIN}\nold\n{fmnist_report.END}\nafter\n")
    assert fmnist_study.train(out, "tiny", "Skip-GANomaly", "one-class", "Trouser", 0)
    assert not fmnist_study.train(out, "tiny", "Skip-GANomaly", "one-class", "Trouser", 0)  # done: skipped
    assert fmnist_study.train(out, "tiny", "Skip-WGANomaly (score weight chosen on validation)",
                              "one-class", "Trouser", 0)
    assert fmnist_study.train(out, "tiny", "Skip-GANomaly", "curves", "Trouser", 0, 2)
    fmnist_report.write_report(out, results, page, "tiny", " ".join(BUDGET))

    table = read_csv(results / "runs_tiny.csv")
    assert [(r["variant"], r["protocol"]) for r in table] == [
        ("Skip-GANomaly", "one-class"), ("Skip-WGANomaly (score weight chosen on validation)", "one-class")]
    trained = json.loads((out / "skip_ganomaly/one-class/trouser/seed0/results.json").read_text())
    assert float(table[0]["test_auroc"]) == trained["best"]["test"]["auroc"]
    chosen = json.loads((out / "skip_wganomaly__score_weight_chosen_on_validation/one-class/trouser/seed0/"
                                "results.json").read_text())["best"]["val"]["score_weight"]
    assert float(table[1]["score_weight"]) == chosen
    curves = read_csv(results / "curves_tiny.csv")
    assert [int(r["epoch"]) for r in curves] == [1, 2]
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "\nold\n" not in text
    assert f"| Skip-GANomaly | — | {trained['best']['test']['auroc']:.3f} |" in text  # Trouser is column 2

    # Without the run folders the report rebuilds the same files and section from results/.
    before = {p.name: p.read_text() for p in results.iterdir()}
    shutil.rmtree(out)
    fmnist_report.write_report(out, results, page, "tiny", " ".join(BUDGET))
    assert {p.name: p.read_text() for p in results.iterdir()} == before
    assert page.read_text() == text


@pytest.mark.dataset
@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_epoch_speed_times_a_real_epoch_against_the_originals_rates(tmp_path):
    out = tmp_path / "epoch.json"
    proc = tool("experiments.epoch_speed", ["--threads", "1", "--isize", "8", "--ngf", "8", "--ndf", "8", "--nz", "8",
                                            "--batchsize", "256", "--out", out], ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    # Leave-one-class-out with Bag abnormal: 54 000 normal images less the 10 % validation share.
    assert result["images_trained"] == 48600 // 256 * 256  # --droplast
    # Validation: 10 % of the 54 000 normal and of the 7 000 Bag images; test: the rest of each.
    assert result["images_evaluated"] == 5400 + 700 + 9000 + 6300
    rates = result["original_img_per_s"]["before"]
    expected = (result["images_trained"] / statistics.fmean([rates["train_img_per_s"],
                                                             result["original_img_per_s"]["after"]["train_img_per_s"]]))
    assert result["original_epoch_seconds_at_its_rates"] > expected * 0.99
    ours = result["epoch_seconds"]["train"] + result["epoch_seconds"]["eval"]
    # The stored seconds are rounded to 0.1 s and the ratio to 0.01; on this tiny epoch (a few seconds)
    # the 0.05 s of rounding alone moves the recomputed ratio by more than 1 %.
    assert result["speedup_train_plus_eval"] == pytest.approx(result["original_epoch_seconds_at_its_rates"] / ours,
                                                              rel=0.01, abs=0.005 + 0.05 / ours)


@pytest.mark.dataset
@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_epoch_speed_against_the_originals_own_code_says_so_and_uses_colour_on_both_sides(tmp_path):
    from tests.test_original_runner import ORIGINAL_CODE
    if ORIGINAL_CODE is None:
        pytest.skip("needs the original code: set ORIGINAL_CODE")
    proc = tool("experiments.epoch_speed", ["--threads", "1", "--isize", "32", "--ngf", "4", "--ndf", "4", "--nz", "4",
                                            "--batchsize", "512", "--original-code", ORIGINAL_CODE], ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["original"].startswith("the original's own code") and result["channels"] == 3
    assert result["original_img_per_s"]["before"]["train_img_per_s"] > 0
    assert result["speedup_train_plus_eval"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--niter", "3"], "--niter: only --isize"),
    (["--isize", "12"], "train.py failed with exit code 2: error: --isize 12 is not supported"),
    (["--abnormal_class", "hat", "--isize", "8", "--ngf", "4", "--ndf", "4", "--nz", "4"],
     "train.py failed with exit code 2: error: unknown class 'hat'"),
])
def test_epoch_speed_fails_with_one_line_naming_the_problem(args, message):
    proc = tool("experiments.epoch_speed", ["--threads", "1", *args], ROOT)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
