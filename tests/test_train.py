"""`python train.py` end to end, as a user runs it, on scikit-learn's digits."""
import json
import re

import pytest
import torch

from tests.helpers import TINY, make_opt, process, read_csv, run_main, train_cli as train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-epoch Skip-WGANomaly run shared by the output tests."""
    cwd = tmp_path_factory.mktemp("run")
    proc = train([*TINY, "--model", "w_skipganomaly", "--niter", "2", "--n_critic", "2", "--outf", "out"], cwd)
    return cwd, cwd / "out" / "w_skipganomaly" / "digits" / "3", proc


def test_a_run_writes_every_output_into_a_folder_named_after_model_dataset_and_class(run):
    cwd, folder, _ = run
    for name in ("opt.txt", "loss_log.txt", "histogram.csv", "metrics.csv", "results.json",
                 "train/weights/last.pt", "train/weights/best.pt", "train/images/real_samples.png",
                 "train/images/fixed_normal_epoch_002.png", "train/images/fixed_abnormal_epoch_002.png"):
        assert (folder / name).is_file(), name
    assert (cwd / "histogram.csv").read_text() == (folder / "histogram.csv").read_text()
    assert not list(folder.rglob("*.tmp"))


def test_histogram_has_one_row_per_test_image_with_scores_and_labels(run):
    _, folder, proc = run
    table = read_csv(folder / "histogram.csv")
    assert list(table[0]) == ["", "scores", "labels"]  # the original's layout: pandas' index column first
    assert [r[""] for r in table] == [str(i) for i in range(len(table))]
    # digits: 1/3 of 1797 images are test images; the abnormal class's training images join them.
    assert "| test " in proc.stdout
    counts = proc.stdout.split("| test ")[1].split()
    assert len(table) == int(counts[0]) + int(counts[3])
    assert {r["labels"] for r in table} == {"0", "1"}


def test_metrics_csv_has_every_loss_and_metric_per_epoch(run):
    _, folder, proc = run
    table = read_csv(folder / "metrics.csv")
    assert [r["epoch"] for r in table] == ["1", "2"]
    for key in ("g_adv", "g_con", "g_lat", "critic", "wasserstein", "gp", "val_auroc", "test_auroc",
                "test_auprc", "test_f1", "test_eer", "lr", "train_seconds", "train_img_per_s", "eval_seconds",
                "eval_img_per_s", "train_images", "eval_images"):
        assert key in table[0], key
    assert 0 <= float(table[-1]["test_auroc"]) <= 1
    # Timing: rate x seconds gives back the split's counts (seconds are rounded to 10 ms).
    counts = [int(n) for n in re.findall(r"\d+", re.search(r"train \d+ normal \|.*", proc.stdout)[0])]
    train_images, evaluated = counts[0] // 64 * 64, sum(counts[1:])  # --droplast drops a partial batch
    for r in table:
        for phase, images in (("train", train_images), ("eval", evaluated)):
            assert int(r[f"{phase}_images"]) == images
            rate = float(r[f"{phase}_img_per_s"])
            assert rate * float(r[f"{phase}_seconds"]) == pytest.approx(images, abs=rate * 0.0051 + 1)


def test_results_json_reports_last_and_validation_selected_epochs(run):
    _, folder, proc = run
    results = json.loads((folder / "results.json").read_text())
    assert results["last"]["epoch"] == 2
    assert results["best"]["selected_by"] == "val_auroc"
    # The best epoch is one whose validation AUROC is the highest, and its test metrics are reported.
    table = read_csv(folder / "metrics.csv")
    val = [float(r["val_auroc"]) for r in table]
    best = table[results["best"]["epoch"] - 1]
    assert float(best["val_auroc"]) == pytest.approx(max(val)) == results["best"]["val"]["auroc"]
    assert float(best["test_auroc"]) == pytest.approx(results["best"]["test"]["auroc"])
    assert "optimistic" in " ".join(results)
    assert results["threshold"]["value"] > 0
    assert f"{results['last']['test']['auroc']:.4f}" in proc.stdout


def test_opt_txt_marks_values_that_differ_from_the_defaults(run):
    _, folder, _ = run
    text = (folder / "opt.txt").read_text()
    assert "niter: 2\t[default: 15]" in text
    assert "w_con: 50" in text and "w_con: 50\t[default" not in text


def test_loss_log_has_a_header_loss_lines_and_one_line_per_epoch(run):
    _, folder, _ = run
    lines = (folder / "loss_log.txt").read_text().splitlines()
    assert lines[0].startswith("================ Training Loss")
    assert any(line.startswith("(epoch: 1, iters: 5)") for line in lines)
    assert sum(line.startswith("epoch ") for line in lines) == 2


@pytest.mark.parametrize("model,extra", [("skipganomaly", []), ("w_skipganomaly", ["--wgan", "clip"]),
                                         ("w_skipganomaly", ["--no_skip", "--normal_class", "7", "--n_critic", "1"])])
def test_every_model_and_critic_constraint_trains_from_the_command_line(tmp_path, model, extra):
    args = [*TINY, "--model", model, "--niter", "1", "--outf", "out", *extra]
    if "--normal_class" in extra:
        args.remove("--abnormal_class"), args.remove("3")
    proc = train(args, tmp_path)
    assert "test auroc" in proc.stdout
    assert len(list((tmp_path / "out").rglob("results.json"))) == 1


def test_resuming_after_epoch_one_ends_exactly_like_an_uninterrupted_run(tmp_path, trained_run_copy):
    train([*TINY, "--model", "skipganomaly", "--outf", "straight", "--niter", "2"], tmp_path)
    train(["--resume", trained_run_copy, "--niter", "2"], tmp_path)  # the session's one-epoch run, copied
    straight = (tmp_path / "straight/skipganomaly/digits/3/histogram.csv").read_text()
    assert (trained_run_copy / "histogram.csv").read_text() == straight


def test_load_weights_with_phase_test_evaluates_without_training(tmp_path, trained_run_copy):
    trained = (trained_run_copy / "histogram.csv").read_text()
    assert not (tmp_path / "histogram.csv").exists()
    proc = train(["--dataset", "digits", "--abnormal_class", "3", "--device", "cpu", "--outf", "out",
                  "--model", "skipganomaly", "--phase", "test", "--load_weights"], tmp_path)
    assert "auroc" in proc.stdout
    assert (tmp_path / "histogram.csv").read_text() == trained  # network settings came from the checkpoint


def test_path_scores_a_folder_with_the_trained_model_after_training(tmp_path):
    from PIL import Image
    (tmp_path / "new").mkdir()
    for i in range(3):
        Image.new("L", (20, 20), color=40 * i).save(tmp_path / "new" / f"{i}.png")
    proc = train([*TINY, "--niter", "1", "--outf", "out", "--path", "new"], tmp_path)
    assert "scored 3 image(s)" in proc.stdout
    table = read_csv(tmp_path / "out/skipganomaly/digits/3/predict/predictions.csv")
    assert sorted(r["path"].split("/")[-1] for r in table) == ["0.png", "1.png", "2.png"]


def test_save_test_images_writes_reals_and_reconstructions(tmp_path):
    train([*TINY, "--niter", "1", "--outf", "out", "--save_test_images"], tmp_path)
    images = sorted(p.name for p in tmp_path.rglob("test/images/*.png"))
    assert "real_0001.png" in images and "fake_0001.png" in images


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA present there is no fallback")
def test_gpu_device_falls_back_to_cpu_with_a_notice(tmp_path):
    args = [a if a != "cpu" else "gpu" for a in TINY]
    proc = train([*args, "--niter", "1", "--outf", "out"], tmp_path)
    assert "CUDA is not available" in proc.stdout


def test_help_lists_the_original_and_the_new_flags():
    proc = process("train.py", ["-h"], ".")
    for flag in ("--abnormal_class", "--w_con", "--niter_decay", "--lr_policy", "--display_id", "--tune",
                 "--wgan", "--lambda_gp", "--clip_value", "--n_critic", "--no_skip", "--noise_std",
                 "--normal_class"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "no_such_model"], "invalid choice: 'no_such_model'"),
    (["--dataset", "cifar10", "--abnormal_class", "plane"], "airplane"),
    (["--dataset", "digits", "--abnormal_class", "12"], "0=0, 1=1, 2=2"),
    (["--isize", "30"], "power of two"),
    (["--w_adv", "-1"], "--w_adv must not be negative"),
    (["--lr", "0"], "--lr must be positive"),
    (["--lr", "fast"], "invalid float value: 'fast'"),
    (["--niter", "-1"], "--niter must not be negative (got -1); 0 builds the untrained control"),
    (["--phase", "test"], "--load_weights"),
    (["--abnormal_class", "1", "--normal_class", "2", "--dataset", "digits"], "not both"),
    (["--dataset", "digits", "--abnormal_class", "1", "--resume", "nowhere"], "no checkpoint at 'nowhere'"),
])
def test_invalid_values_fail_with_one_line_naming_the_problem(tmp_path, args, message):
    proc = train(args, tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "output").exists()


def test_score_weight_val_is_chosen_on_validation_kept_in_the_checkpoint_and_used_by_predict(tmp_path):
    from PIL import Image
    (tmp_path / "new").mkdir()
    for i in range(3):
        Image.new("L", (20, 20), color=40 * i).save(tmp_path / "new" / f"{i}.png")
    train([*TINY, "--model", "w_skipganomaly", "--niter", "2", "--n_critic", "2", "--outf", "out",
           "--score_weight", "val", "--path", "new"], tmp_path)
    run = tmp_path / "out/w_skipganomaly/digits/3"
    weights = [float(r["val_score_weight"]) for r in read_csv(run / "metrics.csv")]
    assert all(0 <= w <= 1 and round(w * 20, 6).is_integer() for w in weights)
    best = json.loads((run / "results.json").read_text())["best"]
    assert best["val"]["score_weight"] == weights[best["epoch"] - 1]
    stored = torch.load(run / "train/weights/best.pt", weights_only=True)["state"]["score_stats"]["weight"]
    assert stored == best["val"]["score_weight"]
    import predict
    out = run_main(predict.main, ["--path", "new", "--weights", str(run), "--device", "cpu", "--overwrite"],
                   tmp_path)
    assert f"score = {stored:g} x image MSE + {1 - stored:g} x feature MSE (chosen on the validation split)" \
        in out.stdout
    for r in read_csv(run / "predict/predictions.csv"):
        expected = stored * float(r["image_mse"]) + (1 - stored) * float(r["feature_mse"])
        assert float(r["score"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fixes,decayed", [("all", True), ("all,-lr_schedule", False)])
def test_the_learning_rate_decays_only_with_the_lr_schedule_fix(tmp_path, fixes, decayed):
    train([*TINY, "--niter", "2", "--lr_policy", "step", "--lr_decay_iters", "1", "--fixes", fixes, "--outf", "out"],
          tmp_path)
    rates = [float(row["lr"]) for row in read_csv(next((tmp_path / "out").rglob("metrics.csv")))]  # each epoch's rate
    assert rates == pytest.approx([2e-4, 2e-5 if decayed else 2e-4])


def test_opt_txt_and_metrics_csv_record_what_the_run_chose_from_the_machine(trained_run):
    from lib import fast as speed_layer
    from lib.fast import hardware
    from lib.models import model_class
    # Skip-GANomaly's default: fp32 on a CPU without native bf16, bf16 on one with it (measured safe under the
    # default score).
    chosen = speed_layer.settings(make_opt(), torch.device("cpu"),
                                  bf16_safe=model_class("skipganomaly").bf16_safe(make_opt()))
    runtime = (trained_run / "opt.txt").read_text().split("------------ Runtime -------------\n")[1]
    fields = dict(line.split(": ", 1) for line in runtime.splitlines()[:-1])
    assert fields.keys() == {"device", "processes", "threads", "cpu", "torch", "precision", "convolutions"}
    assert fields["device"] == "cpu" and fields["processes"] == "1" and int(fields["threads"]) >= 1
    assert fields["precision"] == chosen.why[0]
    assert fields["precision"].startswith("bf16" if hardware.native_bf16() else "fp32")
    assert hardware.capability() in fields["cpu"]
    assert fields["convolutions"].startswith(("matrix products", "convolution kernels"))
    last = read_csv(trained_run / "metrics.csv")[-1]
    assert (last["bf16"], last["threads"], last["processes"]) == (str(int(chosen.amp)),
                                                                   fields["threads"], "1")


def test_resume_with_fewer_epochs_than_the_run_has_trained_is_refused_in_one_line(tmp_path, trained_run_copy):
    # It trained nothing, yet wrote the shorter --niter into opt.txt and a new header into loss_log.txt.
    train(["--resume", trained_run_copy, "--niter", "2", "--device", "cpu"], tmp_path)
    before = {p.name: p.read_bytes() for p in trained_run_copy.iterdir() if p.is_file()}
    proc = process("train.py", ["--resume", trained_run_copy, "--niter", "1", "--device", "cpu"], tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--niter 1 is below the 2 epochs" in proc.stderr and "give --niter 2 or more" in proc.stderr
    assert {p.name: p.read_bytes() for p in trained_run_copy.iterdir() if p.is_file()} == before


def test_phase_test_of_a_loose_checkpoint_scores_path_with_that_checkpoint(tmp_path, trained_run):
    from PIL import Image
    loose = tmp_path / "ck"
    loose.mkdir()
    (loose / "model.pt").write_bytes((trained_run / "train" / "weights" / "last.pt").read_bytes())
    (tmp_path / "imgs").mkdir()
    Image.new("L", (8, 8), color=90).save(tmp_path / "imgs" / "a.png")
    result = train(["--phase", "test", "--load_weights", loose / "model.pt", "--device", "cpu",
                    "--path", tmp_path / "imgs"], tmp_path)
    assert (loose / "model-test" / "results.json").is_file()  # beside it, named after it: never a user's test/
    rows = read_csv(loose / "predict" / "predictions.csv")
    assert [r["path"] for r in rows] == [str(tmp_path / "imgs" / "a.png")], result.stdout


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "no images found in"),
    (lambda p: p.write_text("not an image"), "is not an image of a type PIL reads"),
], ids=["an empty folder", "a text file"])
def test_a_path_with_no_image_is_refused_before_training(tmp_path, make, message):
    make(tmp_path / "given")
    proc = process("train.py", [*TINY, "--niter", "1", "--outf", "out", "--path", tmp_path / "given"], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
