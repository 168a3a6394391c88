"""`python export.py`: a run exported to ONNX or OpenVINO scores, with predict.py, as the run itself does."""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import export
import predict
from lib.export.graph import Located, Measure, to_onnx
from lib.export.runtime import OnnxGraph, OpenVinoGraph
from lib.models import MODELS, model_class
from lib.scoring.functions import SCORES, Scoring, fit
from lib.scoring.located import DISTANCES
from tests.helpers import ONE_EPOCH, make_opt, one_line_error, process, read_csv, run_main, train_cli

MODEL_NAMES = ["skipganomaly", "w_skipganomaly", "ganomaly"]
FORMATS = ["onnx", "openvino"]
RELATIVE = 1e-4  # the promise: scores within 1e-4 relative of the checkpoint's, decisions identical


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("export")
    images = cwd / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)  # grey and colour, several sizes: predict.py converts them as in training
    for i in range(6):
        shape = (12, 10, 3) if i % 2 else (9, 9)
        folder = images / "sub" if i > 3 else images
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return cwd


@pytest.fixture(scope="module")
def runs(cwd):
    """One tiny run of each model, trained once, in fp32 (--no-amp): on a CPU with bf16 the Skip models would
    score in bf16 with PyTorch, which an fp32 export matches only to about 1e-3 (export.py says so)."""
    made = {}
    for name in MODEL_NAMES:
        args = [*ONE_EPOCH, "--model", name, "--outf", "out", "--name", name, "--no-amp"]
        train_cli(args, cwd)
        made[name] = cwd / "out" / name
    return made


@pytest.fixture(scope="module")
def exports(cwd, runs):
    """(model, format) -> its export folder, made once, on demand."""
    made = {}

    def get(name, fmt):
        if (name, fmt) not in made:
            out = cwd / "exports" / f"{name}-{fmt}"
            result = run_main(export.main, ["--weights", runs[name], "--format", fmt, "--out", out], cwd)
            assert result.returncode == 0, result.stdout + result.stderr
            made[name, fmt] = out
        return made[name, fmt]
    return get


@pytest.fixture(scope="module")
def by_run(cwd, runs):
    """model -> predictions.csv's rows as the run itself scores the images (and its strips' folder), made once."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = scored(cwd, runs[name], cwd / "by_run" / name)
        return made[name]
    return get


def scored(cwd, weights, out, *extra):
    result = run_main(predict.main, ["--path", cwd / "images", "--weights", weights, "--out", out, "--device", "cpu",
                                     *extra], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return read_csv(out / "predictions.csv")


def assert_same_predictions(by_run, by_export):
    assert [r["path"] for r in by_export] == [r["path"] for r in by_run]
    assert list(by_export[0]) == list(by_run[0])  # the same columns: the score's parts included
    for run, exp in zip(by_run, by_export):
        for column in run:
            if column not in ("path", "decision", "map"):
                assert float(exp[column]) == pytest.approx(float(run[column]), rel=RELATIVE, abs=1e-9), column
        assert exp["decision"] == run["decision"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_an_export_scores_the_images_as_its_run_does_with_the_same_strips(cwd, by_run, exports, name, fmt):
    by_export = scored(cwd, exports(name, fmt), cwd / f"by_{fmt}" / name)
    assert_same_predictions(by_run(name), by_export)
    strips = sorted(p.relative_to(cwd / "by_run" / name) for p in (cwd / "by_run" / name / "maps").rglob("*.png"))
    assert strips == sorted(p.relative_to(cwd / f"by_{fmt}" / name)
                            for p in (cwd / f"by_{fmt}" / name / "maps").rglob("*.png")) and len(strips) == 6
    for strip in strips:
        a, b = (np.asarray(Image.open(root / strip), np.int16) for root in (cwd / "by_run" / name,
                                                                              cwd / f"by_{fmt}" / name))
        # The same picture: a pixel may round the other way, and the caption's score (6 digits) its last digit.
        assert a.shape == b.shape and (np.abs(a - b).max(2) > 1).mean() < 0.01


@pytest.mark.slow
def test_masks_are_refused_with_an_export_which_lacks_the_map_the_run_chose(cwd, exports):
    refused = run_main(predict.main, ["--path", cwd / "images", "--weights", exports("skipganomaly", "onnx"),
                                      "--masks", cwd / "images", "--out", cwd / "masked", "--device", "cpu"], cwd)
    one_line_error(refused, "which an export does not carry: give --weights the run folder")
    assert not (cwd / "masked").exists()


@pytest.mark.slow
def test_the_manifest_names_the_run_the_score_the_files_and_the_versions(runs, exports):
    folder = exports("skipganomaly", "onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    best = runs["skipganomaly"] / "train/weights/best.pt"
    ckpt = torch.load(best, weights_only=True)
    assert manifest["model"] == "skipganomaly" and manifest["score"] == ckpt["state"]["score"]
    assert manifest["image"]["isize"] == 8 and manifest["image"]["nc"] == 3
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert manifest["threshold"]["value"] == ckpt["threshold"]["value"]
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert sorted(manifest["files"]) == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    # Only the networks the score's pass runs: a generator code's distance needs no adversary.
    if manifest["score"] in ("knn_encoder", "mahalanobis_encoder", "image", "ssim"):
        assert manifest["networks"] == ["generator"]


def models_under_test():
    return [name for name in MODELS if name in (*MODEL_NAMES, "toy_model")]


class Everything(torch.nn.Module):
    """All a model's measurements and each embedding's split over locations, as one graph (one export, not three)."""

    def __init__(self, model, needs, located):
        super().__init__()
        self.measure, self.located = Measure(model, needs), torch.nn.ModuleList(Located(model, m) for m in located)

    def forward(self, images):
        return (*self.measure(images), *(located(images) for located in self.located))


@pytest.mark.slow
@pytest.mark.parametrize("name", models_under_test())
def test_every_score_of_every_model_is_computed_by_its_graphs_as_by_pytorch(name, tmp_path):
    """Any registered model, any score it can measure: the graph of all its measurements and of each embedding's
    split over locations (which the maps use), run by both runtimes, then every score function on the outputs."""
    cls = model_class(name)
    torch.manual_seed(0)
    model = cls(make_opt(model=name, isize=8), torch.device("cpu"), fast=False, amp=False, compile=False)
    model.eval()
    needs = sorted(cls.measurements)
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    located = [m for m in sorted(set(DISTANCES.values()) & set(needs)) if model.embedding_by_location(images, m)
               is not None]
    names = ["fake", *needs, *(f"parts_{m}" for m in located)]
    whole = Everything(model, needs, located).eval()
    with torch.no_grad():
        want = dict(zip(names, (v.numpy() for v in whole(images))))
    file = tmp_path / "measure.onnx"
    file.write_bytes(to_onnx(whole, images[:3], names, name))
    shapes = {k: list(v.shape[1:]) for k, v in want.items()}
    normal = {k: v[:3] for k, v in want.items()}  # statistics fitted on some images, applied to all
    image = {"nc": 3, "isize": 8}
    for graph in (OnnxGraph(file, shapes, image, {}), OpenVinoGraph(convert(file), shapes, image, {})):
        got = graph(images.numpy())
        for score, function in SCORES.items():
            if set(function.needs) <= set(needs):
                scoring = Scoring(score, fit(score, normal, normal))
                assert np.asarray(scoring(got)) == pytest.approx(np.asarray(scoring(want)), rel=RELATIVE), score
        for part in names[len(needs) + 1:]:
            assert got[part] == pytest.approx(want[part], rel=RELATIVE, abs=1e-6), part
    assert located or name == "toy_model"  # the paper models split both embeddings: the maps are tested


def convert(onnx_file):
    import openvino as ov
    xml = onnx_file.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
    return xml


# ------------------------------------------------------------------ bad input: one line, nothing written

def damaged_copy(exports, tmp_path, fmt="onnx"):
    folder = tmp_path / "export"
    shutil.copytree(exports("skipganomaly", fmt), folder)
    return folder


def reseal(folder, **versions):
    """The manifest's hashes made to fit the files again (and `versions` written in): what reaches the runtime."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in manifest["files"]}
    manifest["versions"].update(versions)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def refused(cwd, folder, *fragments):
    out = folder.parent / "predictions"
    result = run_main(predict.main, ["--path", cwd / "images", "--weights", folder, "--out", out], cwd)
    one_line_error(result, *fragments)
    assert not out.exists()


@pytest.mark.slow
def test_a_truncated_graph_is_refused_by_its_hash_and_then_by_the_runtime(cwd, exports, tmp_path):
    folder = damaged_copy(exports, tmp_path)
    graph = folder / "measure.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    refused(cwd, folder, "'measure.onnx' does not match the sha256 its manifest records", "export the run again")
    reseal(folder)
    refused(cwd, folder, "onnxruntime", "cannot load", "Protobuf parsing failed", "export the run again")


@pytest.mark.slow
def test_another_models_graph_is_refused_even_with_its_hash_recorded(cwd, exports, tmp_path):
    for fmt, files in (("onnx", ["measure.onnx"]), ("openvino", ["measure.xml", "measure.bin"])):
        folder = damaged_copy(exports, tmp_path / fmt, fmt)
        for name in files:
            shutil.copy(exports("ganomaly", fmt) / name, folder / name)
        reseal(folder)
        refused(cwd, folder, "is not this export's graph", "export the run again")


@pytest.mark.slow
def test_a_graph_newer_than_the_runtime_names_the_version_it_was_written_for(cwd, exports, tmp_path):
    folder = damaged_copy(exports, tmp_path)
    model = onnx.load(folder / "measure.onnx")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(model, folder / "measure.onnx")
    reseal(folder, onnxruntime="99.0.0")
    refused(cwd, folder, "cannot load", "Opset 99", "written for onnxruntime 99.0.0: install that version")


@pytest.mark.slow
def test_a_manifest_that_does_not_match_its_run_or_files_is_refused(cwd, exports, tmp_path):
    folder = damaged_copy(exports, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    cases = [({**manifest, "image": {**manifest["image"], "isize": 16}}, "'image.isize' is missing or not"),
             ({**manifest, "files": {**manifest["files"], "extra.bin": "0" * 64}}, "'extra.bin', which its manifest"),
             ({**manifest, "format": "something else"}, "is not the manifest of a skip-wganomaly export")]
    for edited, fragment in cases:
        (folder / "manifest.json").write_text(json.dumps(edited))
        refused(cwd, folder, fragment)
    (folder / "manifest.json").write_text("{not json")
    refused(cwd, folder, "its manifest.json is not JSON")
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)  # it raised RecursionError
    refused(cwd, folder, "its manifest.json is not JSON (nested too deep)")
    (folder / "manifest.json").unlink()
    for odd in ("fifo", "device"):  # one blocked forever, the other read /dev/zero until memory ran out
        os.mkfifo(folder / "manifest.json") if odd == "fifo" else (folder / "manifest.json").symlink_to("/dev/zero")
        refused(cwd, folder, "its manifest.json is not a plain file")
        (folder / "manifest.json").unlink()
    if manifest["located"]:  # the maps of another embedding than the score's: refused, not drawn
        other = "adversary_embedding" if manifest["located"] == "encoder_embedding" else "encoder_embedding"
        (folder / "manifest.json").write_text(json.dumps({**manifest, "located": other}))
        refused(cwd, folder, "'located' is missing or not the embedding its score's maps split")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.savez(folder / "score.npz", bank=np.zeros((2, 3), np.float32))  # statistics of another kind of score
    reseal(folder)
    refused(cwd, folder, "is damaged")


@pytest.mark.slow
def test_statistics_of_another_size_than_the_graphs_embedding_are_refused_even_resealed(cwd, exports, tmp_path):
    """A distance's bank from another export (resealed) failed in NumPy with a traceback."""
    name = next(n for n in MODEL_NAMES if json.loads((exports(n, "onnx") / "manifest.json").read_text())["score"]
                in DISTANCES)  # a tiny run chooses a distance of codes or features (it did for each model here)
    folder = tmp_path / "export"
    shutil.copytree(exports(name, "onnx"), folder)
    with np.load(folder / "score.npz") as arrays:
        stats = {key: arrays[key] for key in arrays.files}
    np.savez(folder / "score.npz", **{key: np.zeros((*value.shape[:-1], value.shape[-1] + 3), value.dtype)
                                      if value.ndim else value for key, value in stats.items()})
    reseal(folder)
    refused(cwd, folder, "is damaged: its statistic", "and its graph measures")


@pytest.mark.slow
def test_an_out_that_holds_files_or_lies_in_a_run_is_refused_and_nothing_is_written(cwd, runs, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    cases = [(taken, "already holds files"), (runs["skipganomaly"] / "onnx", "is inside the run folder"),
             (taken / "notes.txt", "is a file")]
    for out, fragment in cases:
        result = run_main(export.main, ["--weights", runs["skipganomaly"], "--out", out], cwd)
        one_line_error(result, fragment)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and not (runs["skipganomaly"] / "onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    result = run_main(export.main, ["--weights", tmp_path / "nothing", "--out", tmp_path / "new"], cwd)
    one_line_error(result, "no checkpoint at")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_without_the_optional_packages_one_line_says_which_extra_to_install(cwd, runs, exports, tmp_path,
                                                                            monkeypatch):
    for module in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    result = run_main(predict.main, ["--path", cwd / "images", "--weights", exports("skipganomaly", "onnx"),
                                     "--out", tmp_path / "p"], cwd)
    one_line_error(result, "needs the package onnxruntime", "skip-wganomaly[export]")
    result = run_main(export.main, ["--weights", runs["skipganomaly"], "--format", "openvino", "--out", tmp_path / "e"],
                      cwd)
    one_line_error(result, "needs the package openvino", "skip-wganomaly[export]")
    assert not (tmp_path / "p").exists() and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_export_py_is_a_command_with_help_and_a_verbose_traceback(cwd, runs):
    """A real process, which imports no runtime before it needs one: a refusal comes first."""
    shown = run_main(export.main, ["-h"], cwd)
    assert shown.returncode == 0 and "--format" in shown.stdout and "openvino" in shown.stdout
    proc = process("export.py", ["--weights", runs["skipganomaly"], "--out", runs["skipganomaly"] / "x",
                                 "--verbose"], cwd)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "is inside the run folder" in proc.stderr


def test_an_empty_out_is_refused_without_pointing_at_a_default_it_does_not_have(tmp_path):
    result = run_main(export.main, ["--weights", "x", "--out", ""], tmp_path)
    one_line_error(result, "--out is empty: give a folder")
    assert "default" not in result.stderr
