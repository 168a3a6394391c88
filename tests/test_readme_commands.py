"""README.md's and docs/*.md's commands, run as written: each `python ...`, `torchrun ... train.py` and
`bash experiments/...` line of their shell blocks is one test case named by the command, so a command added to
them later is tested without editing this file, and every run the commands make is then used as a user would
use it. `make demo` stands for the Makefile's demo recipe, the run the README's next commands use.

Run end to end, at tiny sizes (the slow cases):
- `train.py`, `torchrun ... train.py` and `train_tune.py --tune False`: the README's flags, then TINY's (8x8
  images, widths 8, one epoch, CPU, seed 1), which override them since train.py takes a flag's last value;
  several processes (--ngpu 2, torchrun) as a real job on two CPU processes. A command that reads a run
  (`--resume DIR`, `--load_weights [DIR]`, `--overwrite`) first gets a copy of the run of the README
  command that trains one in that folder; a `--niter` it gives becomes one epoch more than that run has.
- `predict.py`: on a copy of the run of the README command that trains its --weights folder; where --weights
  is the folder a README `export.py` command writes, that command runs first.
- `export.py`: on a copy of the run of the README command that trains its --weights folder; its export must
  hold a manifest.
- `bash experiments/run_*.sh`: one class (CLASSES), DEVICE=cpu, PYTHON=this interpreter, TINY's flags as the
  script's extra arguments (they come last, so they override the script's own).
- `python -m tools.collect_results`, with every alternative of its `[--flag a|b]` synopsis, on a folder that
  holds a README run; `python -m tools.benchmark --loader` with fewer images (CHEAP_TOOLS).
Every run a command trains is then used: `predict.py --weights RUN`, `train.py --resume RUN` for one more
epoch and `train.py --phase test --load_weights RUN` must all succeed.

Checked only up to where the work would start, for time (the fast cases):
- `train_tune.py` searches: every check it makes before Ray starts, but the checks of this machine's GPUs
  and of a cluster's address; it stops where it would start Ray: the README's searches are 27 to 30 trials
  and ask for GPUs or a cluster. tests/test_tune.py and tests/test_tune_cluster.py run real searches.
- other `python -m tools.*` and `python -m experiments.*`: the module's own argument parser accepts the
  command, which stops there (benchmarks and studies take minutes to hours; anomalib_crosscheck needs an
  environment with anomalib).
Skipped, saying why: `python -m venv` (setup, not a command of this project).

Data cannot be downloaded here: each command runs in a folder of its own whose ./data (train.py's default
--dataroot) holds tiny CIFAR-10, MNIST and Fashion-MNIST files in their real formats (tests/conftest.py; a
Fashion-MNIST in ./data is found before Debian's), a folder dataset, `custom`, and inspection data in the MVTec AD
layout, `textures/washer` (tools/make_textures.py, 16x16 images); repository files the command
names (experiments/tune_space.json) are copied there. Placeholders (`<image-size>`, PREFIX, HEAD_IP, `...`)
and files a command reads that no README line writes (`new_images/`, `space.json`) get the stand-ins of
STAND_INS and STAND_IN_FILES. `--display` stays: with no Visdom server at --display_port 9 a run warns once
and goes on, as it does when a user's server is down.
"""
import argparse
import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import export
import predict
import train
import train_tune
from lib import options
from lib.classes import class_names
from lib.commands import train_tune as tune_command
from tests.conftest import make_cifar, make_folder_dataset, make_idx
from tests.helpers import ROOT, read_csv, run_main
from tools.make_textures import make_category

README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))  # where the user reads commands, README first
# Appended to every README command that trains a new run: train.py takes the last value of a flag.
TINY = ["--isize", "8", "--ngf", "8", "--ndf", "8", "--nz", "8", "--batchsize", "64", "--niter", "1",
        "--device", "cpu", "--manualseed", "1", "--print_freq", "5", "--save_image_freq", "10"]
ONE_CLASS_BATCH = "16"  # one class of the stand-in data fills 5 batches of it (see stand_in_data)
NO_DASHBOARD = ["--display_port", "9"]  # nothing answers there: the run warns once and goes on
# Placeholders in the README's commands, replaced inside each argument.
STAND_INS = {"<name-of-the-data>": "custom", "<image-size>": "8", "<number-of-epochs>": "1", "PREFIX": "table",
             "HEAD_IP": "127.0.0.1"}
ELIDED = "..."  # "python train_tune.py ... --address": flags left out, so none are given
# Files the README's commands read but no README command writes: path -> what to put there.
STAND_IN_FILES = {"new_images/": "images", "space.json": '{"w_con": {"grid": [1, 50]}}'}
# Cheap end-to-end runs of tool commands: (module, a flag the command gives) -> flags added.
CHEAP_TOOLS = {("tools.benchmark", "--loader"): ["--loader_images", "256", "--reps", "1"]}
TOOLS_READING_RUNS = {"tools.collect_results"}  # run on a folder holding a README run, as `output`
SETUP_MODULES = {"venv": "it makes a Python environment (setup, not a command of this project)",
                 "pip": "it installs packages (setup, not a command of this project)"}

SCRIPTS = {"train.py": train.main, "train_tune.py": train_tune.main}  # the scripts of commands that train

COMMAND_START = re.compile(r"""(^|&&|;|\|)\s*(\w+=("[^"]*"|'[^']*'|\S*)\s+)*(python[\d.]*|torchrun|bash|echo|make)\s""")
SEPARATORS = {"&&", "||", ";", "|"}


# ------------------------------------------------------------------ reading the README

@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]  # as the shell splits it, comments dropped, environment assignments apart
    env: tuple[tuple[str, str], ...]
    line: int  # where the README writes it
    files: tuple[tuple[str, str], ...] = ()  # what earlier `echo TEXT > FILE` lines of its block write
    page: str = "README.md"

    @property
    def text(self) -> str:
        """The command as one line: only arguments with spaces are quoted, so `[--flag a|b]` reads as written."""
        words = [shlex.quote(w) if re.search(r"\s", w) or not w else w for w in self.argv]
        return " ".join([f"{k}={shlex.quote(v)}" for k, v in self.env] + words)

    @property
    def kind(self) -> str:
        argv = self.argv
        if argv[0] == "bash":
            return "sweep"
        if argv[0] == "torchrun" or Path(argv[1]).name == "train.py":
            return "train"
        if argv[1] == "-m":
            return "setup" if argv[2] in SETUP_MODULES else "module"
        if Path(argv[1]).name == "train_tune.py":
            return "train" if plain_training(argv[2:]) else "search"
        return {"predict.py": "predict", "export.py": "export"}.get(Path(argv[1]).name, "unknown")


def plain_training(args) -> bool:
    """train_tune.py ARGS runs one plain training (--tune False), without Ray."""
    tune = True
    for arg, after in zip(args, [*args[1:], "--"]):
        if arg == "--tune" or arg.startswith("--tune="):
            value = arg.partition("=")[2] or after
            try:
                tune = value.startswith("-") or options.str2bool(value)
            except argparse.ArgumentTypeError:  # train_tune.py refuses it: the search's checks say so
                tune = True
    return not tune


def logical_lines(block: str, first_line: int):
    """(line number, text) of the block's lines that start a command, with their continuation lines:
    a trailing backslash, or a quote still open (a JSON echoed over two lines)."""
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        i += 1
        if not COMMAND_START.search(text):
            continue
        while i < len(lines) and (text.rstrip().endswith("\\") or not _closed(text)):
            text = text.rstrip()[:-1] + " " + lines[i] if text.rstrip().endswith("\\") else text + "\n" + lines[i]
            i += 1
        yield first_line + start, text


def _closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


@functools.cache
def readme_commands() -> tuple[Command, ...]:
    commands, seen = [], set()
    for page in PAGES:
        for command in commands_in(page.read_text(), page.relative_to(ROOT).as_posix()):
            if command.text not in seen:
                seen.add(command.text)
                commands.append(command)
    return tuple(commands)


def demo_recipe() -> list[str]:
    """The Makefile's `make demo` training command, as a user types it in the environment it made: without
    its $(DEMO_OWN) (--overwrite where the demo's own earlier run is there, to let `make demo` run again)."""
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    recipe = recipe.replace("\\\n", " ").replace("$(PY)", "python")
    line = next(line for line in recipe.splitlines() if "train.py" in line)
    return [word for word in shlex.split(line) if word not in ("--overwrite", "$(DEMO_OWN)")]


def commands_in(text: str, page: str = "README.md") -> tuple[Command, ...]:
    """Every python/torchrun/bash experiments/ command (and `make demo`) of a markdown text's shell blocks,
    once each, in order."""
    commands, seen = [], set()
    for block in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M):
        if block.group(1).strip() not in ("", "shell", "bash", "sh", "console"):
            continue  # ```python shows code, not commands
        files = []
        first = text.count("\n", 0, block.start(2)) + 1
        for number, line in logical_lines(block.group(2), first):
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = next((i for i, t in enumerate(tokens) if t in SEPARATORS), len(tokens))
                segment, tokens = tokens[:cut], tokens[cut + 1:]
                env = []
                while segment and re.fullmatch(r"\w+=.*", segment[0], re.S):
                    env.append(tuple(segment.pop(0).split("=", 1)))
                if segment[:2] == ["make", "demo"]:
                    segment = demo_recipe()
                if not segment:
                    continue
                if segment[0] == "echo" and ">" in segment:  # a file the block's next commands may read
                    at = segment.index(">")
                    if inside(segment[at + 1]):
                        files.append((segment[at + 1], " ".join(segment[1:at]) + "\n"))
                    continue
                wanted = (re.fullmatch(r"python[\d.]*", segment[0]) or segment[0] == "torchrun"
                          or (segment[0] == "bash" and len(segment) > 1 and segment[1].startswith("experiments/")))
                command = Command(tuple(segment), tuple(env), number, tuple(files), page)
                if wanted and len(segment) > 1 and command.text not in seen:
                    seen.add(command.text)
                    commands.append(command)
    return tuple(commands)


def inside(path: str) -> bool:
    """`path` is relative and stays below the folder it is relative to."""
    return not os.path.isabs(path) and ".." not in Path(path).parts


def short(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def cases() -> list:
    params, ids = [], set()
    for command in readme_commands():
        name = short(command.text)
        if name in ids:
            name = f"{name} ({command.page} line {command.line})"
        ids.add(name)
        slow = command.kind not in ("setup", "search", "module") or command.argv[2] in TOOLS_READING_RUNS
        params.append(pytest.param(command, id=name, marks=pytest.mark.slow if slow else ()))
    return params


# ------------------------------------------------------------------ stand-ins

def substitute(argv) -> list[str]:
    """The README's arguments with placeholders replaced; `...` (flags left out) dropped."""
    out = []
    for arg in argv:
        if arg == ELIDED:
            continue
        for placeholder, value in STAND_INS.items():
            arg = arg.replace(placeholder, value)
        unknown = re.search(r"<[^<>]+>", arg)
        assert not unknown, f"README placeholder {unknown.group()}: give it a stand-in in STAND_INS"
        out.append(arg)
    return out


def write_images(folder: Path, n: int = 4) -> Path:
    """A few grey and colour images of odd sizes, as a user's folder of new images might hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (13, 20) if i % 2 else (32, 24, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


@pytest.fixture(scope="session")
def stand_in_data(tmp_path_factory) -> Path:
    """./data for every command: tiny CIFAR-10, MNIST, Fashion-MNIST, a folder dataset named `custom` and a
    category of generated inspection data, `textures/washer` (80 training images: more than a batch of 64).

    Skip-WGANomaly refuses a run of fewer training steps than --n_critic (5), so each dataset gives 5 batches
    to train on at least: 324 CIFAR-10 images in batches of 64, leaving one class out; 81 of one class of the
    MNIST-style sets in batches of 16 (ONE_CLASS_BATCH), one-class."""
    data = tmp_path_factory.mktemp("stand_ins") / "data"
    make_cifar(data, n_per_class_train=40, n_per_class_test=4)
    make_idx(data, "MNIST/raw", n_train=900, n_test=100)
    make_idx(data, "FashionMNIST/raw", n_train=900, n_test=100, seed=1)
    make_folder_dataset(data, "custom", n_train=80, n_test_normal=6, n_test_abnormal=6)
    make_category(data / "textures", "washer", seed=0, size=16, n_train=80, n_test=9)
    return data


def workspace(folder: Path, data: Path, command: Command | None = None) -> Path:
    """`folder` as a command's working directory: ./data, the repository files it names, the files its block
    writes and the stand-in files."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data, folder / "data")
    if command:
        for arg in command.argv[2:]:  # the repository's files it names, as from the repository root
            if inside(arg) and (ROOT / arg).is_file():
                (folder / arg).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / arg, folder / arg)
        for name, text in command.files:
            (folder / name).write_text(text)
        for name, content in STAND_IN_FILES.items():
            if name in command.argv and not (folder / name).exists():
                if content == "images":
                    write_images(folder / name)
                else:
                    (folder / name).write_text(content)
    return folder


# ------------------------------------------------------------------ running commands

def check(result, what):
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{output[-4000:]}"
    return result


def outputs(stdout: str) -> list[str]:
    """The folders of the `outputs: FOLDER` lines train.py prints."""
    return [line.removeprefix("outputs: ").strip() for line in stdout.splitlines() if line.startswith("outputs: ")]


def train_args(command: Command) -> tuple[list[str], str, list[str]]:
    """(launcher, script, the script's arguments) of a command that trains: train.py, torchrun ... train.py
    or train_tune.py --tune False."""
    argv = list(command.argv)
    at = next(i for i, arg in enumerate(argv) if Path(arg).name in SCRIPTS)
    launcher = argv[:at]
    if launcher[0] == "torchrun":
        launcher = [sys.executable, "-m", "torch.distributed.run", *launcher[1:]]
    return launcher, Path(argv[at]).name, substitute(argv[at + 1:])


def processes(launcher: list[str], args: list[str]) -> int:
    """How many processes a command trains in."""
    if "--nproc-per-node" in launcher:
        return int(launcher[launcher.index("--nproc-per-node") + 1])
    opt, _ = options.build_parser().parse_known_args(args)
    return max(opt.ngpu, len(str(opt.gpu_ids).split(",")))


def run_train(command: Command, args: list[str], cwd: Path):
    """The command's script with `args`, as the command starts it: in this process, or (several processes)
    as a real job."""
    launcher, script, _ = train_args(command)
    n = processes(launcher, args)
    if n == 1:
        return run_main(SCRIPTS[script], args, cwd)
    if len(os.sched_getaffinity(0)) < n:
        pytest.skip(f"{n} training processes need {n} CPU cores; fewer are ours here")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = launcher if launcher[0] == sys.executable else [sys.executable]
    return subprocess.run([*start, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def tiny_train(args: list[str], leave_out=()) -> list[str]:
    """A command's train.py arguments with TINY's after them (but those in `leave_out`)."""
    tiny = [*TINY, *(["--batchsize", ONE_CLASS_BATCH] if "--normal_class" in args else []),
            *(NO_DASHBOARD if "--display" in args else [])]
    control = any(a == "--niter" and b == "0" for a, b in zip(args, args[1:]))  # the untrained control stays one
    pairs = [pair for pair in zip(tiny[::2], tiny[1::2]) if pair[0] not in leave_out
             and not (control and pair[0] == "--niter")]
    return [*args, *(word for pair in pairs for word in pair)]


def run_folder(args: list[str]) -> str:
    """Where train.py ARGS writes its run, relative to its working directory."""
    opt = options.parse(tiny_train(args))
    return os.path.normpath(Path(opt.outf) / opt.name)


def reads(args: list[str]) -> tuple[str | None, bool]:
    """(the run folder a train.py command reads, whether it must exist): --config DIR, --resume DIR,
    --load_weights [DIR], or for --overwrite the folder it would start over in."""
    opt, _ = options.build_parser().parse_known_args(args)
    if getattr(opt, "config", None):  # no attribute unless given (it is no option of a run)
        return opt.config, True
    if opt.resume:
        return opt.resume, True
    if opt.load_weights is not None:
        return (run_folder(args) if opt.load_weights == "run" else opt.load_weights), True
    if opt.overwrite:
        return run_folder(args), False
    return None, False


def makes_a_run(command: Command) -> bool:
    """The command trains a new run (it resumes, loads and replaces none)."""
    return command.kind == "train" and reads(train_args(command)[2])[0] is None


@dataclass
class Runs:
    """The runs the README's commands make: each command trains once per session, in a folder of its own,
    and the run is copied into each test that reads it (resumed, loaded or used), never changed in place."""
    root: Path
    data: Path
    made: dict = field(default_factory=dict)  # command text -> (its folder, the run's path in it)

    def make(self, command: Command) -> tuple[Path, str]:
        if command.text not in self.made:
            cwd = workspace(Path(tempfile.mkdtemp(prefix=f"line{command.line}-", dir=self.root)), self.data, command)
            result = check(run_train(command, tiny_train(train_args(command)[2]), cwd), command.text)
            folders = outputs(result.stdout)
            assert folders, f"{command.text} printed no `outputs: FOLDER` line:\n{result.stdout[-2000:]}"
            self.made[command.text] = (cwd, folders[-1])
        return self.made[command.text]

    def copy(self, command: Command, cwd: Path) -> Path:
        """The command's run, copied to the same place below `cwd`."""
        made, folder = self.make(command)
        shutil.copytree(made / folder, cwd / folder, dirs_exist_ok=True)
        return cwd / folder

    def copy_run(self, folder: str, cwd: Path, required: bool = True) -> Path | None:
        """The run in `folder` (relative to a working directory) as the first README command that trains
        a new run there makes it, copied below `cwd`."""
        for command in filter(makes_a_run, readme_commands()):
            try:
                made = run_folder(train_args(command)[2])
            except (SystemExit, Exception):  # a command refused here makes no run to read
                continue
            if made == os.path.normpath(folder):
                return self.copy(command, cwd)
        assert not required, f"no README command trains the run '{folder}' that this one reads"
        return None


@pytest.fixture(scope="session")
def runs(tmp_path_factory, stand_in_data) -> Runs:
    return Runs(tmp_path_factory.mktemp("readme_runs"), stand_in_data)


def use_run(run: Path, cwd: Path) -> None:
    """What a user does with a run: score new images, train it on, evaluate it; each must succeed."""
    images = write_images(cwd / "use_images", 3)
    out = cwd / "use_predict"
    check(run_main(predict.main, ["--weights", run, "--path", images, "--device", "cpu", "--out", out], cwd),
          f"predict.py --weights {run}")
    assert len(read_csv(out / "predictions.csv")) == 3
    results = json.loads((run / "results.json").read_text())
    epochs = results["epochs"]
    resumed = run_main(train.main, ["--resume", run, "--niter", epochs + 1, "--device", "cpu"], cwd)
    if results.get("untrained_control"):  # nothing to continue: refused in one line
        assert resumed.returncode == 2 and "is an untrained control" in resumed.stderr, resumed.stderr
    else:
        check(resumed, f"train.py --resume {run}")
        assert json.loads((run / "results.json").read_text())["epochs"] == epochs + 1
    check(run_main(train.main, ["--phase", "test", "--load_weights", run, "--device", "cpu"], cwd),
          f"train.py --phase test --load_weights {run}")
    assert "auroc" in json.loads((run / "test" / "results.json").read_text())["test"]


# ------------------------------------------------------------------ one handler per kind of command

def train_command(command, runs, cwd, monkeypatch):
    args = train_args(command)[2]
    folder, required = reads(args)
    if folder is None:  # it trains a new run: made once, used in a copy
        use_run(runs.copy(command, cwd), cwd)
        return
    runs.copy_run(folder, cwd, required)
    opt, _ = options.build_parser().parse_known_args(args)
    if opt.resume:  # one epoch more than the run has, whatever the README's --niter
        epochs = json.loads((cwd / folder / "results.json").read_text())["epochs"]
        args = [*args, "--device", "cpu", *(["--niter", str(epochs + 1)] if "--niter" in args else [])]
    elif opt.phase == "test":
        args = [*args, "--device", "cpu"]
    else:
        args = tiny_train(args)
    result = check(run_train(command, args, cwd), command.text)
    if getattr(opt, "print_config", False):  # it shows the options the run would have, and runs nothing
        assert result.stdout.startswith("------------ Options -------------\n") and not outputs(result.stdout)
    elif opt.phase == "test":
        assert (cwd / folder / "test" / "results.json").exists()
    else:
        use_run(cwd / outputs(result.stdout)[-1], cwd)


def predict_command(command, runs, cwd, monkeypatch):
    args = substitute(command.argv[2:])
    weights = args[args.index("--weights") + 1]
    exporting = [c for c in readme_commands() if c.kind == "export" and exported_to(c) == os.path.normpath(weights)]
    if exporting:  # an export folder: the README command that writes it runs first
        export_command(exporting[0], runs, cwd, monkeypatch)
    else:
        runs.copy_run(weights, cwd)
    check(run_main(predict.main, [*args, "--device", "cpu"], cwd), command.text)
    out = args[args.index("--out") + 1] if "--out" in args else Path(weights) / "predict"
    assert read_csv(cwd / out / "predictions.csv")


def exported_to(command) -> str:
    """The folder an export.py command writes."""
    args = substitute(command.argv[2:])
    return os.path.normpath(args[args.index("--out") + 1])


def export_command(command, runs, cwd, monkeypatch):
    args = substitute(command.argv[2:])
    runs.copy_run(args[args.index("--weights") + 1], cwd)
    check(run_main(export.main, args, cwd), command.text)
    assert (cwd / exported_to(command) / "manifest.json").is_file()


class RayStarts(Exception):
    """train_tune.py has passed every check and would start Ray now."""


def search_command(command, runs, cwd, monkeypatch):
    """Every check train_tune.py makes before Ray starts; Ray itself is not started."""
    def start(*args):
        raise RayStarts

    monkeypatch.setattr(tune_command, "join_or_start", start)
    monkeypatch.setattr(tune_command, "check_local_resources", lambda args: None)  # the README asks for GPUs
    monkeypatch.setattr(tune_command, "check_reachable", lambda address, source: None)  # and for a cluster
    try:
        result = run_main(train_tune.main, substitute(command.argv[2:]), cwd)
    except RayStarts:
        return
    check(result, command.text)
    pytest.fail(f"{command.text} exited 0 without starting a search")


def sweep_command(command, runs, cwd, monkeypatch):
    script = ROOT / command.argv[1]
    dataset = re.search(r"--dataset\s+(\S+)", script.read_text()).group(1)
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu",
           "CLASSES": class_names(dataset)[2].replace(" ", "_"), **dict(command.env)}
    # The sweep sets --device itself, and with SEEDS --manualseed too (it refuses them as extra flags).
    extra = tiny_train(substitute(command.argv[2:]), leave_out={"--device", *(["--manualseed"] * ("SEEDS" in env))})
    extra += NO_DASHBOARD  # the scripts pass --display
    done = check(subprocess.run(["bash", str(script), *extra], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=600), command.text)
    folders = outputs(done.stdout)
    assert len(folders) == len(env["CLASSES"].split()) * max(1, len(env.get("SEEDS", "").split()))
    for folder in folders:
        use_run(cwd / folder, cwd)


def module_command(command, runs, cwd, monkeypatch):
    name, args = command.argv[2], substitute(command.argv[3:])
    module = importlib.import_module(name)
    cheap = next((flags for (tool, flag), flags in CHEAP_TOOLS.items() if name == tool and flag in args), None)
    if name in TOOLS_READING_RUNS:
        runs.copy(next(filter(makes_a_run, readme_commands())), cwd)
    if {"-h", "--help"} & set(args):  # a page shows the module's help: it prints its usage and exits 0
        shown = check(run_main(module.main, args, cwd), command.text)
        assert "usage:" in shown.stdout
        return
    for variant in synopsis_variants(args):
        if name in TOOLS_READING_RUNS:
            result = check(run_main(module.main, variant, cwd), shlex.join(["python", "-m", name, *variant]))
        elif cheap is not None:
            result = check(run_main(module.main, [*variant, *cheap], cwd), command.text)
        else:
            parse_only(module, variant, cwd, monkeypatch)
            continue
        assert result.stdout.strip(), f"{command.text} printed nothing"


def synopsis_variants(args: list[str]) -> list[list[str]]:
    """A usage line's `[--flag a|b|c]` groups: without them, then each alternative of each group."""
    base, groups, i = [], [], 0
    while i < len(args):
        if args[i].startswith("["):
            j = next(k for k in range(i, len(args)) if args[k].endswith("]"))
            groups.append(" ".join(args[i:j + 1])[1:-1].split())
            i = j + 1
        else:
            base.append(args[i])
            i += 1
    variants = [base]
    for flag, *value in groups:
        for alternative in (value[0].split("|") if value else [None]):
            variants.append([*base, flag, *([] if alternative is None else [alternative])])
    return variants


class Parsed(Exception):
    """The module's parser accepted the README's arguments: stop before any work."""


def parse_only(module, args: list[str], cwd: Path, monkeypatch) -> None:
    """Run the module's main until an argument parser has accepted exactly `args`, and stop there."""
    parse_args, parse_known_args = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    depth = []  # inside parse_args, whose own parse_known_args call is not the end: it still refuses extras

    def stop_at(given, namespace):
        if given is not None and list(given) == args:
            raise Parsed(namespace)

    def checked(self, given=None, namespace=None):
        depth.append(1)
        try:
            namespace = parse_args(self, given, namespace)
        finally:
            depth.pop()
        stop_at(given, namespace)
        return namespace

    def known(self, given=None, namespace=None):
        result = parse_known_args(self, given, namespace)
        if not depth:
            stop_at(given, result[0])
        return result

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", checked)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", known)
    try:
        result = run_main(module.main, args, cwd)
    except Parsed:
        return
    pytest.fail(f"{module.__name__} {shlex.join(args)}: its parser never accepted them (exit "
                f"{result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")


def setup_command(command, runs, cwd, monkeypatch):
    pytest.skip(f"{command.text}: {SETUP_MODULES[command.argv[2]]}")


HANDLERS = {"train": train_command, "predict": predict_command, "export": export_command, "search": search_command,
            "sweep": sweep_command, "module": module_command, "setup": setup_command}


@pytest.mark.parametrize("command", cases())
def test_the_readme_command_runs_and_its_runs_can_be_used(command, runs, stand_in_data, tmp_path, monkeypatch):
    handler = HANDLERS.get(command.kind)
    assert handler, (f"README line {command.line}: no way to run `{command.text}`: teach "
                     "tests/test_readme_commands.py its kind")
    handler(command, runs, workspace(tmp_path / "cwd", stand_in_data, command), monkeypatch)


MARKDOWN = """
```shell
python train.py --dataset cifar10 \\
    --niter 2   # a comment
DEVICE=cpu CLASSES="bird cat" bash experiments/run_cifar_skip.sh --niter 1
make dashboard  # or: python -m visdom.server
python3.11 -m venv .venv && . .venv/bin/activate
echo '{"w_con": {"grid": [1,
       2]}}' > sweep.json
python train_tune.py --space sweep.json
python train.py --dataset cifar10 --niter 2
```

```python
python = "not a command"
```
"""


def test_commands_are_found_in_shell_blocks_as_the_shell_reads_them():
    commands = commands_in(MARKDOWN)
    assert [(c.text, c.line) for c in commands] == [
        ("python train.py --dataset cifar10 --niter 2", 3),  # joined, its comment dropped, once
        ("DEVICE=cpu CLASSES='bird cat' bash experiments/run_cifar_skip.sh --niter 1", 5),
        ("python3.11 -m venv .venv", 7),
        ("python train_tune.py --space sweep.json", 10)]
    assert [c.kind for c in commands] == ["train", "sweep", "setup", "search"]
    assert commands[1].env == (("DEVICE", "cpu"), ("CLASSES", "bird cat"))
    assert json.loads(dict(commands[3].files)["sweep.json"]) == {"w_con": {"grid": [1, 2]}}  # echoed over 2 lines


def test_every_readme_command_is_one_a_handler_knows():
    unknown = [c.text for c in readme_commands() if c.kind not in HANDLERS]
    assert not unknown, "teach tests/test_readme_commands.py to run these README commands"
    assert synopsis_variants(["out", "[--metric", "a|b]", "[--out", "PREFIX]"]) == [
        ["out"], ["out", "--metric", "a"], ["out", "--metric", "b"], ["out", "--out", "PREFIX"]]
