"""The ablation of the fixes (experiments/ablation.py): real tiny runs, resumed, and its report."""
import json

import pytest

from experiments import ablation, ablation_report
from tests.helpers import one_line_error, process, run_main, tiny

BUDGET = [*tiny(abnormal_class=None, manualseed=None, print_freq=None, save_image_freq=None), "--niter", "2",
          "--val_ratio", "0.2"]


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "BUDGET", BUDGET)
    monkeypatch.setattr(ablation, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(ablation, "SCRATCH", tmp_path / "runs")
    monkeypatch.setattr(ablation, "PAGE", tmp_path / "page.md")
    monkeypatch.setattr(ablation, "DIFFERENCES", tmp_path / "README.md")
    (tmp_path / "README.md").write_text(f"a\n{ablation_report.EFFECTS_BEGIN}\n{ablation_report.EFFECTS_END}\nb\n")
    monkeypatch.setattr(ablation, "STEPS", {"scoring": (("3", "5"), False), "fixes": (("3",), True)})
    markers = f"{ablation_report.BEGIN}\nstale-table\n{ablation_report.END}"
    (tmp_path / "page.md").write_text(f"intro\n{markers}\nconclusions\n")
    return tmp_path


@pytest.mark.slow
def test_every_variant_is_trained_once_scored_three_ways_and_tabled(study, monkeypatch, capsys):
    import torch
    threads = torch.get_num_threads()
    assert ablation.main(["--seeds", "0"]) == 0
    assert torch.get_num_threads() == threads  # the runs' own count is not left behind
    runs = ablation.finished_runs()
    assert {r["threads"] for r in runs} == {ablation.THREADS}
    w_variants = ablation.variants("w_skipganomaly", True)
    skip_variants = ablation.variants("skipganomaly", True)
    # scoring: the original, all fixes and (where it differs) our default on two classes; fixes:
    # every other variant on one class.
    scoring = [ablation.variants(model, False) for model in ablation.MODELS]
    assert "our default" in scoring[0] and "our default" in skip_variants  # classifier_bias is off by default
    assert len(runs) == 2 * sum(map(len, scoring)) + len(w_variants) + len(skip_variants) - sum(map(len, scoring))
    assert "original + gp_of_mean" in w_variants and "all fixes - classifier_bias" in skip_variants
    assert not any("gp_of_mean" in v for v in skip_variants)
    for run in runs:
        assert [e["epoch"] for e in run["epochs"]] == [1, 2]
        for epoch in run["epochs"]:
            assert {"val_eval", "test_eval", "val_train_ordered", "test_train_ordered"} <= set(epoch)
            assert all(0 <= v <= 1 for k, v in epoch.items() if k != "epoch")
        assert "test_train_shuffled" in run["epochs"][-1]
    # The same weights scored in eval and in training mode give different rankings.
    original = [r for r in runs if r["variant"] == "original"]
    assert any(r["epochs"][-1]["test_eval"] != r["epochs"][-1]["test_train_ordered"] for r in original)

    page = (study / "page.md").read_text()
    assert page.startswith("intro\n") and page.endswith("conclusions\n") and "stale-table" not in page
    assert "### The same weights scored three ways" in page and "### Each fix, Skip-WGANomaly" in page
    assert "| original + eval_mode_scoring | eval mode |" in page
    assert "| all fixes - eval_mode_scoring | training mode |" in page
    assert "### What the original's way of each fix changes" in page
    honest = [line for line in page.splitlines() if line.startswith(("| Skip-GANomaly | ", "| Skip-WGANomaly | "))
              and "of" in line.split("|")[-2]]
    assert len(honest) == 2  # our default against the original, per model, with how often the original is ahead
    readme = (study / "README.md").read_text()
    assert readme.startswith("a\n") and readme.endswith("b\n")
    assert "| `gp_of_mean` |" in readme and "| `classifier_bias` |" in readme
    effects = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `")}
    assert effects["`classifier_bias`"].split("|")[4].strip().startswith("off: ")
    cells = [cell.strip() for cell in effects["`gp_of_mean`"].split("|")[5:9]]
    assert cells[:2] == ["n/a", "n/a"]  # a Skip-WGANomaly fix: no Skip-GANomaly effect
    assert all(cell not in ("—", "n/a") for cell in cells[2:])  # undone from ours, and added to the original
    assert all(isinstance(r["adversary_restarts"], int) for r in runs)
    rows = (study / "results" / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * len(runs)

    # A second call trains nothing: every run is on disk.
    monkeypatch.setattr(ablation, "train_one", lambda *a, **k: pytest.fail("trained again"))
    capsys.readouterr()
    assert ablation.main(["--seeds", "0"]) == 0
    assert capsys.readouterr().out.startswith("report:")


def test_a_run_scores_in_its_own_way_by_its_fixes():
    assert ablation_report.own_way("none") == "train_ordered"
    assert ablation_report.own_way("all") == "eval"
    assert ablation_report.own_way("all,-eval_mode_scoring") == "train_ordered"
    assert ablation_report.own_way("all,-gp_of_mean") == "eval"
    assert ablation_report.own_way("eval_mode_scoring") == "eval"


def test_the_selected_epoch_comes_from_the_named_split():
    run = {"epochs": [{"val_eval": 0.9, "test_eval": 0.5}, {"val_eval": 0.6, "test_eval": 0.8}]}
    assert ablation_report.selected(run, "eval", "val") == 0.5
    assert ablation_report.selected(run, "eval", "test") == 0.8


def test_bad_arguments_get_one_line(capsys):
    from lib.errors import UserError
    for argv in (["--seeds", "a"], ["--models", "ganomaly"], ["--variants", "all fixes - nothing"],
                 ["--models", "skipganomaly", "--variants", "all fixes - gp_of_mean"]):
        with pytest.raises(UserError):
            ablation.main(argv)
    json.dumps({})


@pytest.mark.parametrize("seeds,fragment", [(s, f"--seeds {s!r}: give whole numbers")
                                            for s in ("-1", "0,-2", " , ", "a")]
                         + [("0,1,0", "--seeds names 0 twice"), ("", "--seeds is empty")])
def test_seeds_must_be_fixed_whole_numbers_each_once_and_some_given(study, monkeypatch, seeds, fragment):
    monkeypatch.setattr(ablation, "train_one", lambda *a, **k: pytest.fail("trained"))
    page = (study / "page.md").read_text()
    done = run_main(ablation.main, ["--seeds", seeds, "--step", "fixes", "--models", "skipganomaly",
                                    "--variants", "all fixes"], study)
    one_line_error(done, fragment)
    assert not (study / "results").exists() and (study / "page.md").read_text() == page


# The ablation with the study fixture's paths and budget, and a real Ctrl-C (SIGINT to itself) as the
# first epoch starts: the moment is fixed, the signal and its handling are not stand-ins.
CTRL_C = """import json, os, signal, sys
from pathlib import Path
from experiments import ablation
from lib.errors import run_cli
from lib.training.trainer import Trainer
tmp = Path(sys.argv[1])
ablation.BUDGET = json.loads(sys.argv[2])
ablation.RESULTS, ablation.SCRATCH, ablation.PAGE = tmp / "results", tmp / "runs", tmp / "page.md"
ablation.DIFFERENCES = tmp / "README.md"
ablation.STEPS = {"fixes": (("3",), True)}
train_epoch = Trainer.train_epoch
def ctrl_c_then_train(self, stop):
    os.kill(os.getpid(), signal.SIGINT)
    return train_epoch(self, stop)
Trainer.train_epoch = ctrl_c_then_train
sys.exit(run_cli(ablation.main, sys.argv[3:]))
"""


def test_ctrl_c_during_a_run_stops_the_ablation_in_one_line_and_keeps_the_finished_runs(study):
    script = study / "ctrl_c.py"
    script.write_text(CTRL_C)
    finished = ablation.run_file("skipganomaly", "original", "3", 0)
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    page = (study / "page.md").read_text()
    done = process(script, [study, json.dumps(BUDGET), "--seeds", "0", "--step", "fixes", "--models", "skipganomaly",
                            "--variants", "original,all fixes"], study)
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("interrupted: stopped by signal 2; the finished runs are kept") and "rerun" in lines[0]
    assert finished.read_text() == "{}" and len(list((study / "results").rglob("seed*.json"))) == 1
    assert (study / "page.md").read_text() == page  # no report from an interrupted study


def test_variants_limits_the_runs_to_the_named_ones(study, monkeypatch):
    trained = []

    def record(model, fixes, abnormal, seed, log):
        trained.append((model, fixes))
        raise KeyboardInterrupt  # stop after the first: which one came first is the question

    monkeypatch.setattr(ablation, "train_one", record)
    with pytest.raises(KeyboardInterrupt):
        ablation.main(["--step", "fixes", "--models", "w_skipganomaly", "--variants", "all fixes - gp_of_mean"])
    assert trained == [("w_skipganomaly", "all,-gp_of_mean")]


@pytest.mark.slow
def test_eval_mode_scores_the_weights_as_training_left_them_whatever_way_the_run_scores(study):
    """A run that scores in training mode moves BatchNorm's running statistics toward its test
    batches; its eval-mode AUROC must not see that. Both runs train identically (the way of
    scoring changes no weight), so their first epoch's eval-mode AUROCs are equal; in training
    mode, which never reads the running statistics, every epoch's are."""
    base = "own_data_order,bce_with_logits"
    train_mode = ablation.train_one("skipganomaly", base, "3", 0, log=lambda *_: None)["epochs"]
    eval_mode = ablation.train_one("skipganomaly", base + ",eval_mode_scoring", "3", 0, log=lambda *_: None)["epochs"]
    for key in ("val_eval", "test_eval"):
        assert train_mode[0][key] == eval_mode[0][key]
    for a, b in zip(train_mode, eval_mode):
        assert a["test_train_ordered"] == b["test_train_ordered"]
    assert train_mode[-1]["test_train_shuffled"] == eval_mode[-1]["test_train_shuffled"]


@pytest.fixture
def bf16_check(tmp_path, monkeypatch):
    """experiments.bf16_check with its results and its docs page under tmp_path."""
    from experiments import bf16_check
    monkeypatch.setattr(ablation, "RESULTS", tmp_path / "ablation")
    monkeypatch.setattr(bf16_check, "RESULTS", tmp_path / "ablation")
    monkeypatch.setattr(bf16_check, "RUNS", tmp_path / "bf16" / "runs")
    monkeypatch.setattr(bf16_check, "NATIVE", tmp_path / "bf16" / "native")
    page = tmp_path / "benchmarks.md"
    page.write_text(f"before\n{bf16_check.BEGIN}\nold\n{bf16_check.END}\nafter\n")
    monkeypatch.setattr(bf16_check, "PAGE", page)
    return bf16_check


def write(path, val, test, **more):  # a run of one epoch, scored in eval mode
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"epochs": [{"epoch": 1, "val_eval": val, "test_eval": test}], "seconds": 10, **more}))


def test_the_bf16_table_pairs_each_bf16_run_with_its_fp32_twin_of_the_same_seed(bf16_check):

    for seed, (fp32, bf16) in enumerate([(0.6, 0.62), (0.7, 0.69)]):
        write(ablation.run_file("skipganomaly", "our default", "Bag", seed), 0.5, fp32)
        write(bf16_check.bf16_file("skipganomaly", "Bag", seed), 0.5, bf16)
    write(ablation.run_file("skipganomaly", "our default", "Bag", 2), 0.5, 0.9)  # no bf16 twin: left out
    text = bf16_check.table()
    # The spread is over every fp32 seed, the unpaired seed 2 included: 0.6, 0.7, 0.9.
    assert "| Skip-GANomaly | Bag | 2 | 0.650 ± 0.071 | 0.655 ± 0.049 | 0.005 ± 0.021 | 0.153 (3 seeds) |" in text
    assert "| **Skip-GANomaly** | all | 2 runs |" in text and "Skip-WGANomaly" not in text


def test_native_bf16_runs_pair_with_fp32_twins_trained_on_the_same_cpu_not_the_ablations(bf16_check):
    cpu = "AMD EPYC (AVX512)"
    for seed, (ablation_fp32, fp32, bf16) in enumerate([(0.9, 0.6, 0.62), (0.9, 0.7, 0.69)]):
        write(ablation.run_file("w_skipganomaly", "our default", "Dress", seed), 0.5, ablation_fp32)
        write(bf16_check.native_file("w_skipganomaly", "Dress", seed, "fp32"), 0.5, fp32, cpu=cpu)
        write(bf16_check.native_file("w_skipganomaly", "Dress", seed, "bf16"), 0.5, bf16, cpu=cpu)
    write(bf16_check.native_file("w_skipganomaly", "Dress", 2, "bf16"), 0.5, 0.1, cpu=cpu)  # no fp32 twin
    page = bf16_check.PAGE.read_text() if bf16_check.report() else ""
    assert page.startswith("before\n") and page.endswith("after\n") and "\nold\n" not in page
    native = page.split("**Native bf16**", 1)[1]
    assert f"one CPU, {cpu}, with" in native and "3 bf16 runs" in native
    # Paired with the twins trained beside them (0.6, 0.7), not with the ablation's 0.9.
    assert "| Skip-WGANomaly | Dress | 2 | 0.650 ± 0.071 | 0.655 ± 0.049 | 0.005 ± 0.021 | 0.000 (2 seeds) |" in native


def test_native_on_a_cpu_without_native_bf16_is_refused_in_one_line_and_trains_nothing(bf16_check, monkeypatch):
    from lib.errors import UserError
    from lib.fast import hardware
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(bf16_check, "train_one", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match="^--native: this CPU .* has no native bf16 .*leave out --native"):
        bf16_check.main(["--native", "--seeds", "0"])
    assert not bf16_check.NATIVE.exists()
