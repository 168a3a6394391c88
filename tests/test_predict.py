"""`python predict.py`: scores, decisions and anomaly maps for new images from a trained run."""
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from lib.errors import UserError, run_cli
from lib.files import NAME_MAX
from lib.predict.maps import map_name, strip
from lib.predict.score import choose_threshold
from tests.conftest import make_folder_dataset
from tests.helpers import process, read_csv, train_cli

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
    train_cli(args, cwd)
    return cwd, dataset, cwd / "out" / "run"


def score(argv, capsys):
    """Run predict.py in this process; (exit code, stdout, stderr)."""
    try:
        code = run_cli(predict.main, [*argv, "--device", "cpu"])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--overwrite"], capsys)
    assert code == 0
    predicted = read_csv(folder / "predict" / "predictions.csv")
    trained = read_csv(folder / "histogram.csv")
    # Same images in the same (sorted) order: normal test folder, then abnormal.
    assert len(predicted) == len(trained) == 7
    for p, t in zip(predicted, trained):
        assert float(p["score"]) == pytest.approx(float(t["scores"]), abs=1e-5)
    assert [p["path"].split("/test/")[1].startswith("1.abnormal") for p in predicted] == \
        [t["labels"] == "1" for t in trained]


def test_decisions_follow_the_stored_threshold_and_it_is_printed_with_how_it_was_chosen(run, capsys):
    _, dataset, folder = run
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--overwrite"], capsys)
    stored = torch.load(folder / "train/weights/best.pt", weights_only=True)["threshold"]
    assert code == 0
    assert f"threshold: {stored['value']:.6g}, stored at training: 95th percentile" in out
    assert f"also stored: {stored['f1_optimal_test']:.6g}, F1-optimal on the labelled test set" in out
    table = read_csv(folder / "predict" / "predictions.csv")
    assert len(table) == 7
    for row in table:
        expected = "abnormal" if float(row["score"]) >= stored["value"] else "normal"
        assert row["decision"] == expected
        # The score is the weighted sum of its two parts (--score_weight 0.9).
        parts = 0.9 * float(row["image_mse"]) + 0.1 * float(row["feature_mse"])
        assert float(row["score"]) == pytest.approx(parts, rel=1e-5)


def test_threshold_option_overrides_and_an_image_at_the_threshold_is_abnormal(run, capsys, tmp_path):
    _, dataset, folder = run
    score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "a"),
           "--maps", "none"], capsys)
    scores = sorted(float(r["score"]) for r in read_csv(tmp_path / "a" / "predictions.csv"))
    middle = repr(scores[3])
    code, out, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out",
                          str(tmp_path / "b"), "--threshold", middle, "--maps", "none"], capsys)
    assert code == 0 and "given by --threshold" in out
    decisions = [r["decision"] for r in sorted(read_csv(tmp_path / "b" / "predictions.csv"),
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
    table = read_csv(tmp_path / "out" / "predictions.csv")
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
    (row,) = read_csv(tmp_path / "one" / "predictions.csv")
    assert (tmp_path / "one" / "maps" / "img_0.bmp.png").is_file()
    score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "all"),
           "--maps", "none"], capsys)
    in_folder = {r["path"]: r for r in read_csv(tmp_path / "all" / "predictions.csv")}
    assert float(row["score"]) == pytest.approx(float(in_folder[str(image)]["score"]), abs=1e-5)


def test_maps_none_writes_scores_only(run, capsys, tmp_path):
    _, dataset, folder = run
    code, _, _ = score(["--path", str(dataset / "test/0.normal"), "--weights", str(folder),
                        "--out", str(tmp_path), "--maps", "none"], capsys)
    assert code == 0 and len(read_csv(tmp_path / "predictions.csv")) == 4
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


def test_map_names_of_the_longest_image_names_fit_and_stay_apart():
    root = Path("/data")
    # Two 255-byte names that differ only in their last characters, and one of 2-byte characters.
    images = ["x" * 250 + "1.png", "x" * 250 + "2.png", "é" * 125 + ".png", "x" * 251 + ".png"]
    names = [map_name(root / "a" / name, root) for name in images]
    assert len(set(names)) == len(images)
    assert all(len(os.fsencode(n.name)) <= NAME_MAX and n.parent == Path("a") and n.suffix == ".png" for n in names)


def test_a_checkpoint_without_a_threshold_asks_for_one():
    with pytest.raises(UserError, match="pass --threshold"):
        choose_threshold({}, None)
    assert choose_threshold({}, "0.5") == (0.5, ["threshold: 0.5, given by --threshold"])


@pytest.mark.slow
def test_a_missing_path_is_a_one_line_error_with_exit_code_2(run):
    cwd, _, folder = run
    proc = process("predict.py", ["--path", "nowhere", "--weights", folder, "--out", "fresh"], cwd)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --path 'nowhere' does not exist; give an "
                                                "image file or a folder of images"]
    assert not (cwd / "fresh").exists()


class Payload:
    """Unpickling this would run code (create `marker`); weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


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
            pickle.dump({"format": "skip-wganomaly/1", "state": Payload(tmp_path / "pwned")}, f, protocol=2)
    else:
        torch.save({"state_dict": {"w": torch.zeros(2)}}, weights)
    code, out, err = score(["--path", str(dataset / "test"), "--weights", str(weights),
                            "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and not (tmp_path / "pwned").exists()
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


# Names up to NAME_MAX bytes: '.png' and a temporary file's prefix and tail would take them past it.
LONG_NAMES = ["x" * 236 + ".png", "y" * 240 + ".png", "z" * 251 + ".png", "é" * 125 + ".png",
              "x" * 250 + "1.png", "x" * 250 + "2.png"]


def test_images_of_the_longest_names_the_file_system_takes_get_their_strips_and_rows(run, capsys, tmp_path):
    _, dataset, folder = run
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in [*LONG_NAMES, "plain.png"]:
        shutil.copy(dataset / "test/0.normal/img_1.png", images / "sub" / name)
    code, _, err = score(["--path", str(images), "--weights", str(folder), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    table = read_csv(tmp_path / "o" / "predictions.csv")
    assert sorted(Path(r["path"]).name for r in table) == sorted([*LONG_NAMES, "plain.png"])
    maps = {r["map"] for r in table}
    assert len(maps) == len(table) and all(Path(m).is_file() for m in maps)  # each strip where its row says
    assert sorted(map(str, (tmp_path / "o" / "maps").rglob("*.png"))) == sorted(maps)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_an_image_name_holding_a_carriage_return_reads_back_whole_from_predictions_csv(run, capsys, tmp_path):
    _, dataset, folder = run
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a\rb.png", "plain.png"):
        shutil.copy(dataset / "test/0.normal/img_1.png", images / name)
    code, _, err = score(["--path", str(images), "--weights", str(folder), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    table = read_csv(tmp_path / "o" / "predictions.csv")
    assert [r["path"] for r in table] == [str(images / "a\rb.png"), str(images / "plain.png")]
    assert Path(table[0]["map"]) == tmp_path / "o" / "maps" / "a\rb.png.png" and Path(table[0]["map"]).is_file()
    assert all(float(r["score"]) >= 0 for r in table)


def test_a_failed_run_into_a_new_nested_out_leaves_none_of_the_folders_it_made(run, capsys, tmp_path):
    _, _, folder = run
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = score(["--path", str(tmp_path / "bad"), "--weights", str(folder),
                          "--out", str(tmp_path / "a" / "b" / "c")], capsys)
    assert code == 2 and "none of the 1 image file(s)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


# --- bad input of predict.py's own, and earlier outputs it must never lose --------------------------
def predict_process(args, cwd):
    """A real `python predict.py ARGS` process (str arguments may carry undecodable bytes)."""
    return process("predict.py", [*args, "--device", "cpu"], cwd, errors="backslashreplace")


def refused(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))} if folder.exists() else {}


@pytest.mark.parametrize("batchsize, message", [
    ("0", "--batchsize must be between 1 and 2147483647 (got 0)"),
    ("-3", "--batchsize must be between 1 and 2147483647"),
    (str(2**31), f"(got {2**31})"),
    ("99999999999999999999999", "(got 99999999999999999999999)"),
    ("ten", "invalid int value: 'ten'"),
])
def test_a_batchsize_out_of_range_is_refused_before_anything_is_loaded(run, capsys, tmp_path, batchsize, message):
    _, dataset, folder = run
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o"),
                          "--batchsize", batchsize], capsys)
    refused(code, err, message)
    assert not (tmp_path / "o").exists()


def test_a_batchsize_larger_than_the_images_scores_them_in_one_batch(run, capsys, tmp_path):
    _, dataset, folder = run
    code, _, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o"),
                        "--batchsize", str(2**31 - 1), "--maps", "none"], capsys)
    assert code == 0 and len(read_csv(tmp_path / "o" / "predictions.csv")) == 7


@pytest.mark.parametrize("value,fragment", [(v, "--threshold must be a finite number")
                                            for v in ("nan", "inf", "-inf", "1e999")]
                         + [("0.5_0", "--threshold '0.5_0': give a number")])  # Python's float() reads 0.5
def test_a_threshold_that_is_not_a_finite_number_is_refused(run, capsys, tmp_path, value, fragment):
    _, dataset, folder = run
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o"),
                          f"--threshold={value}"], capsys)
    refused(code, err, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_image_names_of_bytes_that_are_not_utf8_are_scored_and_written_back_as_those_bytes(run, tmp_path):
    _, dataset, folder = run
    images = tmp_path / "images"
    images.mkdir()
    odd = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: not UTF-8
    shutil.copy(dataset / "test/0.normal/img_1.png", images / odd)
    shutil.copy(dataset / "test/0.normal/img_1.png", images / "plain.png")
    proc = predict_process(["--path", images, "--weights", folder, "--out", tmp_path / "o"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "o" / "predictions.csv").read_bytes()
    assert b"caf\xe9-\xff.png," in table and (tmp_path / "o" / "maps" / (odd + ".png")).is_file()
    single = predict_process(["--path", images / odd, "--weights", folder, "--out", tmp_path / "one"], tmp_path)
    assert single.returncode == 0, single.stderr
    assert b"caf\xe9-\xff.png" in (tmp_path / "one" / "predictions.csv").read_bytes()


def earlier_predictions(run, tmp_path, capsys):
    """A first predict.py run into tmp_path/o, and a snapshot of what it wrote."""
    _, dataset, folder = run
    code, _, _ = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 0
    return tree(tmp_path / "o")


def test_a_second_run_into_the_same_out_is_refused_and_the_first_outputs_are_kept(run, capsys, tmp_path):
    _, dataset, folder = run
    before = earlier_predictions(run, tmp_path, capsys)
    code, _, err = score(["--path", str(dataset / "test/0.normal"), "--weights", str(folder),
                          "--out", str(tmp_path / "o")], capsys)
    refused(code, err, "already holds earlier predictions (predictions.csv and maps)", "--overwrite")
    assert tree(tmp_path / "o") == before


def test_overwrite_replaces_the_predictions_and_their_maps_whole(run, capsys, tmp_path):
    _, dataset, folder = run
    earlier_predictions(run, tmp_path, capsys)
    code, _, _ = score(["--path", str(dataset / "test/0.normal"), "--weights", str(folder),
                        "--out", str(tmp_path / "o"), "--overwrite"], capsys)
    assert code == 0
    table = read_csv(tmp_path / "o" / "predictions.csv")
    maps = sorted((tmp_path / "o" / "maps").rglob("*.png"))
    assert len(table) == len(maps) == 4  # the strips of the earlier run's other images are gone
    assert sorted(r["map"] for r in table) == sorted(map(str, maps))
    assert [p.name for p in (tmp_path / "o").iterdir() if p.name.startswith(".")] == []


def test_a_failed_overwrite_leaves_the_earlier_outputs_untouched(run, capsys, tmp_path):
    _, _, folder = run
    before = earlier_predictions(run, tmp_path, capsys)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = score(["--path", str(tmp_path / "bad"), "--weights", str(folder), "--out", str(tmp_path / "o"),
                          "--overwrite"], capsys)
    assert code == 2 and "none of the 1 image file(s)" in err
    assert tree(tmp_path / "o") == before


@pytest.mark.parametrize("kind", ["a file", "a link to nothing", "a file named predictions.csv's folder"])
def test_an_out_that_cannot_be_the_output_folder_is_refused_untouched(run, capsys, tmp_path, kind):
    _, dataset, folder = run
    out = tmp_path / "o"
    if kind == "a file":
        out.write_text("mine")
        message = "is a file, not a folder"
    elif kind == "a link to nothing":
        out.symlink_to(tmp_path / "nowhere")
        message = "is a symbolic link to nothing"
    else:
        (out / "predictions.csv").mkdir(parents=True)
        message = "is not the file predict.py writes there"
    before = tree(tmp_path)
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(out),
                          "--overwrite"], capsys)
    refused(code, err, message)
    assert tree(tmp_path) == before and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("link", ["maps", "predictions.csv"])
def test_a_link_planted_in_out_is_never_written_through(run, capsys, tmp_path, link):
    _, dataset, folder = run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / link).symlink_to(elsewhere if link == "maps" else elsewhere / "precious.txt")
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o"),
                          "--overwrite"], capsys)
    refused(code, err, "is a symbolic link; predict.py never writes through or replaces a link")
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]
    assert (elsewhere / "precious.txt").read_text() == "keep"


def test_images_inside_out_are_refused_and_an_out_inside_the_images_is_left_out_of_scoring(run, capsys, tmp_path):
    _, dataset, folder = run
    images = tmp_path / "images"
    shutil.copytree(dataset / "test/0.normal", images)
    code, _, err = score(["--path", str(images), "--weights", str(folder), "--out", str(tmp_path)], capsys)
    refused(code, err, "are inside --out")
    code, _, _ = score(["--path", str(images), "--weights", str(folder), "--out", str(images / "scored")], capsys)
    assert code == 0
    code, _, _ = score(["--path", str(images), "--weights", str(folder), "--out", str(images / "again")], capsys)
    assert code == 0 and len(read_csv(images / "again" / "predictions.csv")) == 4  # its own earlier maps not scored


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_scoring(run, capsys, tmp_path):
    _, dataset, folder = run
    (tmp_path / "o").mkdir()
    (tmp_path / "o").chmod(0o555)
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(folder), "--out", str(tmp_path / "o")],
                         capsys)
    refused(code, err, "cannot write the output folder")


@pytest.mark.parametrize("weights, message", [
    ("empty", "the folder has no best.pt or train/weights/best.pt"),
    ("model.pt", "the folder has no best.pt"),
    ("only_last", "it holds last.pt: give that file itself"),
    ("missing.pt", "it does not exist"),
])
def test_weights_that_hold_no_checkpoint_say_what_was_looked_for(run, capsys, tmp_path, weights, message):
    _, dataset, folder = run
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.pt").mkdir()  # a folder named like a checkpoint
    (tmp_path / "only_last" / "train" / "weights").mkdir(parents=True)
    shutil.copy(folder / "train/weights/last.pt", tmp_path / "only_last" / "train" / "weights")
    code, _, err = score(["--path", str(dataset / "test"), "--weights", str(tmp_path / weights)], capsys)
    refused(code, err, f"no checkpoint at '{tmp_path / weights}'", message)
    assert not (tmp_path / weights / "predict").exists()


# --- images of other bit depths and modes: scaled to 0..255 as their depth says, or refused --------
def grey_ramp():
    return np.linspace(0, 1, ISIZE * ISIZE).reshape(ISIZE, ISIZE)


def mode_images(folder: Path) -> dict:
    """{name: reference 8-bit image name, or None where a refusal is right} for images in many modes."""
    ramp = grey_ramp()
    eight = np.round(ramp * 255).astype(np.uint8)
    sixteen = np.round(ramp * 65535).astype(np.uint16)
    Image.fromarray((sixteen >> 8).astype(np.uint8)).save(folder / "ref16.png")
    Image.fromarray(eight).save(folder / "ref8.png")
    Image.fromarray(sixteen).save(folder / "i16.png")  # 'I;16'
    Image.frombytes("I;16B", (ISIZE, ISIZE), sixteen.astype(">u2").tobytes()).save(folder / "i16b.tif")
    Image.fromarray(sixteen.astype(np.int32), "I").save(folder / "i32_16bit_values.tif")
    Image.fromarray((ramp * 2**20).astype(np.int32), "I").save(folder / "i32_beyond_16bit.tif")
    Image.fromarray(ramp.astype(np.float32), "F").save(folder / "float_0_1.tif")
    Image.fromarray((ramp * 255).astype(np.float32), "F").save(folder / "float_0_255.tif")
    bits = ramp > 0.5
    Image.fromarray(bits).save(folder / "bits.png")  # '1'
    Image.fromarray((bits * 255).astype(np.uint8)).save(folder / "ref_bits.png")
    cmyk = np.zeros((ISIZE, ISIZE, 4), np.uint8)
    cmyk[..., 3] = 255 - eight
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.tif")
    Image.fromarray(np.stack([eight, np.full_like(eight, 128)], -1), "LA").save(folder / "la.png")
    Image.fromarray(eight).convert("P").save(folder / "palette_transparent.png", transparency=0)
    return {"i16.png": "ref16.png", "i16b.tif": "ref16.png", "i32_16bit_values.tif": "ref16.png",
            "i32_beyond_16bit.tif": None, "float_0_1.tif": "ref8.png", "float_0_255.tif": None,
            "bits.png": "ref_bits.png", "cmyk.tif": "ref8.png", "la.png": "ref8.png",
            "palette_transparent.png": "ref8.png"}


def test_images_of_every_depth_and_mode_score_like_their_8_bit_copy_or_are_refused_with_a_reason(
        run, capsys, tmp_path):
    _, _, folder = run
    images = tmp_path / "images"
    images.mkdir()
    expected = mode_images(images)
    code, _, err = score(["--path", str(images), "--weights", str(folder), "--out", str(tmp_path / "o"),
                          "--maps", "none"], capsys)
    assert code == 0
    scores = {Path(r["path"]).name: float(r["score"]) for r in read_csv(tmp_path / "o" / "predictions.csv")}
    for name, reference in expected.items():
        if reference is None:  # no known intensity range: refused, with the reason, never clipped
            assert name not in scores and name in err and "intensit" in err, (name, err)
        else:
            assert scores[name] == pytest.approx(scores[reference], abs=1e-6), name
