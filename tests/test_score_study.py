"""The score study: every score of real tiny Fashion-MNIST runs, chosen on validation only."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from experiments import fmnist_setup, score_study
from lib.errors import run_cli
from tests.helpers import one_line_error, read_csv, run_main, tiny

FASHION = Path("/usr/share/datasets/fashion-mnist")
BUDGET = [*tiny(dataset=None, abnormal_class=None, manualseed=None, print_freq=None, save_image_freq=None,
                batchsize=512), "--niter", "1", "--dataroot", str(FASHION)]


@pytest.mark.dataset
@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_every_score_of_every_run_is_tabled_and_the_headline_is_chosen_on_validation(tmp_path, monkeypatch):
    monkeypatch.setitem(fmnist_setup.BUDGETS, "tiny", BUDGET)
    monkeypatch.setattr(score_study, "BUDGET", "tiny")
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{score_study.BEGIN}\nold\n{score_study.END}\nafter\n")
    args = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--page", str(page),
            "--models", "GANomaly,Skip-WGANomaly", "--classes", "Trouser", "--protocols", "one-class"]
    threads = torch.get_num_threads()
    assert run_cli(score_study.main, args) in (0, None)
    assert torch.get_num_threads() == threads  # scoring in this process leaves its thread count alone

    scores = json.loads((tmp_path / "runs/ganomaly/one-class/trouser/seed0/scores.json").read_text())["scores"]
    assert "latent" in scores and "original" in scores and all(0 <= v["test"] <= 1 for v in scores.values())
    rows = read_csv(tmp_path / "results" / "scores_tiny.csv")
    chosen = [r for r in rows if r["chosen_on_validation"] == "True"]
    assert {r["model"] for r in chosen} == {"GANomaly", "Skip-WGANomaly"} and len(chosen) == 2
    for r in chosen:  # the chosen score has the best validation AUROC of its run, whatever its test AUROC
        same_run = [x for x in rows if x["model"] == r["model"]]
        assert float(r["val_auroc"]) == max(float(x["val_auroc"]) for x in same_run)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "\nold\n" not in text
    assert "| GANomaly | one-class | 1 |" in text and "| `latent` |" in text

    # Nothing is trained or scored again; --report rebuilds from the scored runs alone.
    monkeypatch.setattr(score_study, "score_run", lambda run: pytest.fail("scored again"))
    assert run_cli(score_study.main, args) in (0, None)
    assert run_cli(score_study.main, [*args, "--report"]) in (0, None)
    assert page.read_text() == text


@pytest.mark.parametrize("args,named", [(["--models", "Magic"], "--models 'Magic'"),
                                       (["--protocols", "both"], "--protocols 'both'")])
def test_unknown_models_and_protocols_get_one_line(args, named, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(score_study.main, [*args, "--report"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {named}") and err.count("\n") == 1


@pytest.fixture
def committed(tmp_path, monkeypatch):
    """A checkout under tmp_path: copies of the committed CSVs and page made the defaults, and no output/."""
    results, page = tmp_path / "results" / "fmnist", tmp_path / "docs" / "score_study.md"
    results.mkdir(parents=True)
    page.parent.mkdir()
    for name in ("scores_cpu.csv", "baselines_one-class.csv", "baselines_leave-one-out.csv"):
        shutil.copy(score_study.RESULTS / name, results / name)
    shutil.copy(score_study.PAGE, page)
    monkeypatch.setattr(score_study, "ROOT", tmp_path)
    monkeypatch.setattr(score_study, "RESULTS", results)
    monkeypatch.setattr(score_study, "PAGE", page)
    return tmp_path


def files(root: Path) -> dict:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("out,named", [("empty", "--out "), ("missing", "--out "),
                                       (None, "holds no scored runs: nothing to report")])
def test_a_report_from_no_runs_or_from_another_folder_leaves_the_committed_tables_alone(committed, out, named):
    """The README's `--report` on a checkout without output/, and --out an empty or a missing folder."""
    (committed / "empty").mkdir()
    before = files(committed)
    done = run_main(score_study.main, [*(["--out", committed / out] if out else []), "--report"], committed)
    one_line_error(done, named)
    assert files(committed) == before


def test_a_report_of_another_folder_goes_elsewhere_and_not_from_nothing(committed):
    before = files(committed)
    done = run_main(score_study.main, ["--out", committed / "empty", "--results", committed / "mine",
                                       "--page", committed / "mine.md", "--report"], committed)
    one_line_error(done, "holds no scored runs")
    assert files(committed) == before and not (committed / "mine").exists()


def scored_run(root: Path, rows: list[dict], test=None) -> None:
    """The scores.json of the rows' run in the study's default folder under `root` (`test`: every test AUROC)."""
    r = rows[0]
    run = root / "output/fmnist_study_cpu" / fmnist_setup.slug(r["model"]) / r["protocol"] / fmnist_setup.slug(
        r["class"]) / "seed0"
    run.mkdir(parents=True, exist_ok=True)
    scores = {x["score"]: {"val": float(x["val_auroc"]), "test": test or float(x["test_auroc"])} for x in rows}
    (run / "scores.json").write_text(json.dumps({"epoch": 2, "scores": scores}))


def test_a_report_from_fewer_runs_replaces_their_rows_and_keeps_the_others(committed):
    csv_file = committed / "results/fmnist/scores_cpu.csv"
    committed_rows = read_csv(csv_file)
    one = [r for r in committed_rows if (r["model"], r["protocol"], r["class"]) == ("GANomaly", "one-class", "Bag")]
    assert one
    before = files(committed)
    scored_run(committed, one)  # the same numbers: the same tables (the line naming the budget aside)
    assert run_main(score_study.main, ["--report"], committed).returncode == 0
    after = files(committed)
    assert after[csv_file] == before[csv_file]
    page = committed / "docs/score_study.md"
    assert [line for line in after[page].splitlines() if not line.startswith(b"_Generated by")] == \
        [line for line in before[page].splitlines() if not line.startswith(b"_Generated by")]

    scored_run(committed, one, test=0.25)  # scored anew: only its rows change
    assert run_main(score_study.main, ["--report"], committed).returncode == 0
    rows = read_csv(csv_file)
    bag = lambda r: (r["model"], r["protocol"], r["class"]) == ("GANomaly", "one-class", "Bag")  # noqa: E731
    assert len(rows) == len(committed_rows)
    assert [r for r in rows if not bag(r)] == [r for r in committed_rows if not bag(r)]
    assert [r["score"] for r in rows if bag(r)] == [r["score"] for r in one]
    assert {r["test_auroc"] for r in rows if bag(r)} == {"0.25"}
    assert "from 60 scored runs" in (committed / "docs/score_study.md").read_text()


@pytest.mark.parametrize("text", ["notes\n", f"{score_study.BEGIN}\n", f"{score_study.END}\n{score_study.BEGIN}\n"])
def test_a_page_without_the_markers_is_refused_in_one_line_naming_them(tmp_path, text):
    page = tmp_path / "notes.md"
    page.write_text(text)
    done = run_main(score_study.main, ["--out", tmp_path / "runs", "--results", tmp_path / "results", "--page", page,
                                       "--report"], tmp_path)
    one_line_error(done, "--page", score_study.BEGIN, score_study.END)
    assert page.read_text() == text and not (tmp_path / "results").exists()


@pytest.mark.parametrize("flag", ["--results", "--page", "--out"])
def test_a_file_or_a_folder_where_the_other_is_expected_is_refused_in_one_line(tmp_path, flag):
    places = {"--out": tmp_path / "runs", "--results": tmp_path / "results", "--page": tmp_path / "page.md"}
    wrong = places[flag]
    if flag == "--page":
        wrong.mkdir()
    else:
        wrong.write_text("mine\n")
    done = run_main(score_study.main, [*(x for item in places.items() for x in map(str, item)), "--report"],
                    tmp_path)
    one_line_error(done, flag)
    assert wrong.is_dir() if flag == "--page" else wrong.read_text() == "mine\n"
