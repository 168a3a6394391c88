"""`python predict.py`: scores, decisions and anomaly maps for new images from a trained run."""
import csv
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from lib.errors import UserError, run_cli
from lib.predict import choose_threshold, map_name, strip
from tests.conftest import make_folder_dataset

ROOT = Path(__file__).resolve().parent.parent
ISIZE = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny Skip-GANomaly trained one epoch on a folder dataset; every test image is tested."""
    cwd = tmp_path_factory.mktemp("predict")
    dataset = make_folder_dataset(cwd / "data", n_train=16)
    args = ["--dataset", "custom", "--dataroot", "data", "--isize", str(ISIZE), "--nc", "3",
            "--ngf", "8", "--ndf", "8", "--nz", "8", "--niter", "1", "--device", "cpu",
            "--batchsize", "16", "--manualseed", "1", "--outf", "out", "--name", "run",
            "--model", "skipganomaly", "--val_ratio", "0"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, dataset, cwd / "out" / "run"


def score(argv, capsys):
    """Run predict.py in this process; (exit code, stdout, stderr)."""
    try:
        code = run_cli(predict.main, [*argv, "--device", "cpu"])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def mixed_folder(root, dataset):
    """Nested folders of grey and colour images of several sizes, two sharing a name, one corrupt."""
    folder = root / "incoming"
    for sub in ("a", "b/deeper"):
        (folder / sub).mkdir(parents=True)
    shutil.copy(dataset / "test/0.normal/img_1.png", folder / "a" / "same.png")
    shutil.copy(dataset / "test/1.abnormal/img_1.png", folder / "b" / "same.png")
    Image.fromarray(np.full((30, 20), 90, np.uint8)).save(folder / "b/deeper/grey.png")
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(folder / "b/deeper/big.jpg")
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_scores_are_identical_to_the_training_runs_evaluation_of_the_same_images(run, capsys):
    cwd, dataset, folder = run
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder)], capsys)
    assert code == 0
    predicted = rows(folder / "predict" / "predictions.csv")
    trained = rows(folder / "histogram.csv")
    # Same images in the same (sorted) order: normal test folder, then abnormal.
    assert len(predicted) == len(trained) == 7
    for p, t in zip(predicted, trained):
        assert float(p["score"]) == pytest.approx(float(t["scores"]), abs=1e-5)
    assert [p["path"].split("/test/")[1].startswith("1.abnormal") for p in predicted] == \
        [t["labels"] == "1" for t in trained]


def test_decisions_follow_the_stored_threshold_and_it_is_printed_with_how_it_was_chosen(run, capsys):
    _, dataset, folder = run
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder)], capsys)
    stored = torch.load(folder / "train/weights/best.pt", weights_only=True)["threshold"]
    assert code == 0
    assert f"threshold: {stored['value']:.6g}, stored at training: 95th percentile" in out
    assert f"also stored: {stored['f1_optimal_test']:.6g}, F1-optimal on the labelled test set" in out
    for row in rows(folder / "predict" / "predictions.csv"):
        expected = "abnormal" if float(row["score"]) >= stored["value"] else "normal"
        assert row["decision"] == expected
        # The score is the weighted sum of its two parts (--score_weight 0.9).
        parts = 0.9 * float(row["reconstruction"]) + 0.1 * float(row["features"])
        assert float(row["score"]) == pytest.approx(parts, rel=1e-5)


def test_threshold_option_overrides_and_an_image_at_the_threshold_is_abnormal(run, capsys, tmp_path):
    _, dataset, folder = run
    score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "a"),
           "--maps", "none"], capsys)
    scores = sorted(float(r["score"]) for r in rows(tmp_path / "a" / "predictions.csv"))
    middle = repr(scores[3])
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out",
                          str(tmp_path / "b"), "--threshold", middle, "--maps", "none"], capsys)
    assert code == 0 and "given by --threshold" in out
    decisions = [r["decision"] for r in sorted(rows(tmp_path / "b" / "predictions.csv"),
                                               key=lambda r: float(r["score"]))]
    assert decisions == ["normal"] * 3 + ["abnormal"] * 4
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out",
                          str(tmp_path / "c"), "--threshold", "f1", "--maps", "none"], capsys)
    assert code == 0 and "stored at training: F1-optimal on the labelled test set" in out


def test_a_nested_mixed_folder_gives_one_row_and_one_map_per_readable_image(run, capsys, tmp_path):
    _, dataset, folder = run
    images = mixed_folder(tmp_path, dataset)
    (images / "readme.txt").write_text("not an image")
    code, out, err = score(["--path", str(images), "--weights", str(folder / "train/weights/best.pt"),
                            "--out", str(tmp_path / "out"), "--batchsize", "3"], capsys)
    assert code == 0
    table = rows(tmp_path / "out" / "predictions.csv")
    assert sorted(Path(r["path"]).relative_to(images).as_posix() for r in table) == \
        ["a/same.png", "b/deeper/big.jpg", "b/deeper/grey.png", "b/same.png"]
    assert "scored 4 image(s)" in out
    # Same-named files in different folders keep separate maps.
    maps = sorted(p.relative_to(tmp_path / "out" / "maps").as_posix()
                  for p in (tmp_path / "out" / "maps").rglob("*.png"))
    assert maps == ["a/same.png.png", "b/deeper/big.jpg.png", "b/deeper/grey.png.png", "b/same.png.png"]
    assert sorted(r["map"] for r in table) == sorted(str(tmp_path / "out" / "maps" / m) for m in maps)
    # The corrupt image and the text file are listed at the end, and did not stop the batch.
    assert "skipped 2 file(s)" in err and "broken.png" in err and "readme.txt" in err


def test_an_image_scores_the_same_alone_as_inside_a_folder_batch(run, capsys, tmp_path):
    _, dataset, folder = run
    image = dataset / "test/1.abnormal/nested/img_0.bmp"
    code, _, _ = score(["--path", str(image), "--weights", str(folder), "--out", str(tmp_path / "one")],
                       capsys)
    assert code == 0
    (row,) = rows(tmp_path / "one" / "predictions.csv")
    assert (tmp_path / "one" / "maps" / "img_0.bmp.png").is_file()
    score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "all"),
           "--maps", "none"], capsys)
    in_folder = {r["path"]: r for r in rows(tmp_path / "all" / "predictions.csv")}
    assert float(row["score"]) == pytest.approx(float(in_folder[str(image)]["score"]), abs=1e-5)


def test_maps_none_writes_scores_only(run, capsys, tmp_path):
    _, dataset, folder = run
    code, _, _ = score(["--path", str(dataset / "test/0.normal"), "--weights", str(folder),
                        "--out", str(tmp_path), "--maps", "none"], capsys)
    assert code == 0 and len(rows(tmp_path / "predictions.csv")) == 4
    assert not (tmp_path / "maps").exists()


def test_a_strip_shows_input_reconstruction_and_a_heatmap_only_where_they_differ():
    real = torch.full((1, ISIZE, ISIZE), 0.2)
    fake = real.clone()
    fake[:, :4, :4] = -1.0  # a badly reconstructed corner
    pixels = strip(real, fake)
    scale = 128 // ISIZE
    gap = ISIZE // 16
    assert pixels.shape == ((ISIZE * scale), (3 * ISIZE + 2 * gap) * scale, 3)
    tile = lambda k: pixels[:, (k * (ISIZE + gap)) * scale:(k * (ISIZE + gap) + ISIZE) * scale]  # noqa: E731
    assert (tile(2)[-scale:, -scale:] == tile(0)[-scale:, -scale:]).all()  # no error: input shows
    assert not (tile(2)[:scale, :scale] == tile(0)[:scale, :scale]).all()  # error: heat colour
    assert (tile(1)[:scale, :scale] == 0).all()  # the reconstruction, -1 shown black


def test_map_names_keep_subfolders_and_extensions_apart():
    root = Path("/data")
    names = {map_name(root / p, root) for p in ("x.png", "x.jpg", "a/x.png", "b/x.png")}
    assert len(names) == 4
    assert map_name(Path("/data/one.png"), Path("/data/one.png")) == Path("one.png.png")


def test_a_checkpoint_without_a_threshold_asks_for_one():
    with pytest.raises(UserError, match="pass --threshold"):
        choose_threshold({}, None)
    assert choose_threshold({}, "0.5") == (0.5, ["threshold: 0.5, given by --threshold"])


def test_a_missing_path_is_a_one_line_error_with_exit_code_2(run):
    cwd, _, folder = run
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--path", "nowhere",
                           "--weights", str(folder), "--out", "fresh"], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --path 'nowhere' does not exist; give an "
                                                "image file or a folder of images"]
    assert not (cwd / "fresh").exists()


class Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind", ["random bytes", "pickle with code", "foreign checkpoint",
                                  "ours without networks"])
def test_a_checkpoint_of_the_wrong_kind_is_refused_with_one_line(run, capsys, tmp_path, kind):
    _, dataset, folder = run
    weights = tmp_path / "model.pt"
    if kind == "ours without networks":
        ckpt = torch.load(folder / "train/weights/best.pt", weights_only=True)
        del ckpt["state"]["generator"]
        torch.save(ckpt, weights)
    elif kind == "random bytes":
        weights.write_bytes(os.urandom(256))
    elif kind == "pickle with code":
        with open(weights, "wb") as f:
            pickle.dump({"format": "skip-wganomaly/1", "state": Payload()}, f, protocol=2)
    else:
        torch.save({"state_dict": {"w": torch.zeros(2)}}, weights)
    code, out, err = score(["--path", str(dataset / "test"), "--weights", str(weights),
                            "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "pwned" not in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_is_an_error(run, capsys, tmp_path):
    _, _, folder = run
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    code, _, err = score(["--path", str(tmp_path / "empty"), "--weights", str(folder),
                          "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.startswith("error: no images found")
    assert not (tmp_path / "out").exists()


def test_a_threshold_from_another_epoch_than_the_weights_is_pointed_out(run, capsys, tmp_path):
    _, dataset, folder = run
    ckpt = torch.load(folder / "train/weights/best.pt", weights_only=True)
    ckpt["threshold"] = {**ckpt["threshold"], "epoch": ckpt["epoch"] + 3}
    torch.save(ckpt, tmp_path / "last.pt")
    code, out, _ = score(["--path", str(dataset / "test/0.normal"), "--weights", str(tmp_path / "last.pt"),
                          "--maps", "none"], capsys)
    assert code == 0 and f"chosen at epoch {ckpt['epoch'] + 3}" in out


def test_a_folder_of_only_unreadable_images_is_an_error_that_writes_nothing(run, capsys, tmp_path):
    _, _, folder = run
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = score(["--path", str(tmp_path / "bad"), "--weights", str(folder),
                          "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "broken.png" in err and err.strip().splitlines()[-1].startswith("error: none of")
    assert not (tmp_path / "out").exists()
