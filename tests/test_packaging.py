"""The package as pip installs it: one namespaced package (skip_wganomaly, the checkout's lib/), console
commands that train and score outside the checkout, the default search spaces as package data, and
dependency ranges that hold the versions requirements.txt pins."""
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from tests.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = "skip_wganomaly"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("source")
    # A copy of the checkout's package files: building in place would leave build/ and *.egg-info behind.
    subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", "-o", build / "src.tar", "HEAD"], check=True)
    subprocess.run(["tar", "-xf", build / "src.tar", "-C", build], check=True)
    for path in ("pyproject.toml", "lib"):  # what is being changed now, not only what is committed
        subprocess.run(["cp", "-r", ROOT / path, build], check=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out,
                           build], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_holds_one_namespaced_package_with_every_folder_of_lib_and_its_spaces(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {PACKAGE, f"{PACKAGE}-0.1.0.dist-info"}  # no lib, train, ...
    folders = {p.parent.relative_to(ROOT / "lib") for p in (ROOT / "lib").rglob("__init__.py")}
    packaged = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert packaged == {"/".join([PACKAGE, *f.parts]) for f in folders}  # a new folder of lib/ is not forgotten
    modules = {p.relative_to(ROOT / "lib").as_posix() for p in (ROOT / "lib").rglob("*.py")}
    assert {n.removeprefix(f"{PACKAGE}/") for n in names if n.endswith(".py")} == modules
    assert {f"{PACKAGE}/tune/tune_space.json", f"{PACKAGE}/tune/tune_space_original.json"} <= set(names)
    meta = zipfile.ZipFile(wheel).read(f"{PACKAGE}-0.1.0.dist-info/entry_points.txt").decode()
    for command in ("skip-wganomaly-train", "skip-wganomaly-tune", "skip-wganomaly-predict", "skip-wganomaly-export"):
        assert command in meta
    assert any(n.endswith("licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_the_installed_commands_train_and_score_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel], check=True)
    work = tmp_path / "work"
    work.mkdir()
    # Only the installed package is importable: not the checkout (its lib would answer as `lib`).
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PYTHONSAFEPATH", None)
    train = subprocess.run([target / "bin" / "skip-wganomaly-train", "--dataset", "digits", "--abnormal-class", "0",
                            "--isize", "8", "--ngf", "8", "--ndf", "8", "--nz", "8", "--niter", "1", "--device", "cpu",
                            "--manualseed", "0", "--outf", "out"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr
    assert "outputs: out/skipganomaly/digits/0" in train.stdout
    (work / "images").mkdir()
    (work / "images" / "x.png").write_bytes((ROOT / "docs" / "predict_example.png").read_bytes())
    scored = subprocess.run([target / "bin" / "skip-wganomaly-predict", "--path", "images", "--weights",
                             "out/skipganomaly/digits/0", "--device", "cpu"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    assert (work / "out/skipganomaly/digits/0/predict/predictions.csv").is_file()
    exported = subprocess.run([target / "bin" / "skip-wganomaly-export", "--weights", "out/skipganomaly/digits/0",
                               "--out", "deployed"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr
    scored = subprocess.run([target / "bin" / "skip-wganomaly-predict", "--path", "images", "--weights", "deployed"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    assert (work / "deployed/predict/predictions.csv").is_file()
    refused = subprocess.run([target / "bin" / "skip-wganomaly-tune", "--dataset", "digits", "--nitr", "1"], cwd=work,
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "did you mean --niter" in refused.stderr
    found = subprocess.run([sys.executable, "-c", "import lib"], cwd=work, env=env, capture_output=True)
    assert found.returncode != 0  # the install added no top-level `lib`


def test_an_installed_command_run_by_a_python_without_the_requirements_says_so_in_one_line(wheel, tmp_path):
    import venv
    target, bare = tmp_path / "site", tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel], check=True)
    venv.create(bare, with_pip=False, system_site_packages=False)  # no numpy, no torch
    args = {"train": ["--niter", "1"], "train_tune": ["--niter", "1"],  # what the commands refuse nothing else of
            "predict": ["--path", tmp_path, "--weights", "r"], "export": ["--weights", "r", "--out", tmp_path / "x"]}
    for module, command in (("train", "train"), ("train_tune", "tune"), ("predict", "predict"), ("export", "export")):
        for form in (["-c", f"from {PACKAGE}.console import {command}; {command}()"],
                     ["-m", f"{PACKAGE}.commands.{module}"]):
            proc = subprocess.run([bare / "bin" / "python", *form, *args[module]], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot load "), proc.stderr
    assert not (tmp_path / "x").exists()


def test_every_pinned_requirement_lies_in_the_packages_range():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = {Requirement(line).name.lower(): Requirement(line) for line in lines if line.strip() and line[0] != "#"}
    declared = [*PYPROJECT["project"]["dependencies"], *sum(PYPROJECT["project"]["optional-dependencies"].values(), [])]
    for text in declared:
        wanted = Requirement(text)
        pin = pins.get(wanted.name.lower())
        assert pin is not None, f"{wanted.name} is not pinned in requirements.txt"
        [exact] = list(pin.specifier)
        assert exact.operator == "==" and wanted.specifier.contains(exact.version), (text, str(pin))
        if wanted.name not in ("ruff",):  # a range, not a pin, for what users install
            assert "==" not in str(wanted.specifier), text
