"""The score study: every score of real tiny Fashion-MNIST runs, chosen on validation only."""
import json
from pathlib import Path

import pytest
import torch

from experiments import fmnist_setup, score_study
from lib.errors import run_cli
from tests.helpers import read_csv, tiny

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
