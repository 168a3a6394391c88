"""The Visdom dashboard (lib/display/visualizer.py, dashboard/): a real server, a real browser, no internet."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

# visdom is the dashboard extra: without it (pip install without [dashboard]) these tests skip, the rest run.
Visdom = pytest.importorskip("visdom", reason="the dashboard's tests need visdom (the dashboard extra)").Visdom

from dashboard.screenshot import open_dashboard  # noqa: E402
from lib.display.visdom_visualizer import VisdomVisualizer  # noqa: E402
from lib.display.visualizer import NullVisualizer, env_name, make_visualizer  # noqa: E402
from lib.scoring.metrics import roc_auc  # noqa: E402
from tests.conftest import make_folder_dataset  # noqa: E402
from tests.helpers import ROOT, TINY, tiny  # noqa: E402

RUN = "w_skipganomaly/cifar10/airplane"
# visdom 0.2.4 calls the deprecated Logger.warn when a client skips the incoming socket.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
LOSSES = ("g_adv", "g_con", "g_lat", "critic", "wasserstein", "gradient_penalty")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VisdomServer:
    """`python -m visdom.server` on a free localhost port, saving environments under `env_path`."""

    def __init__(self, env_path: Path):
        self.port, self.log_path = free_port(), env_path / "server.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "visdom.server", "-port", str(self.port), "-env_path", str(env_path),
                 "-bind_local", "-logging_level", "WARNING"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"visdom server did not start:\n{self.log()}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            return no_proxy.open(f"http://127.0.0.1:{self.port}/", timeout=2).status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text()

    def client(self) -> Visdom:
        """The plain Visdom API, to read back what the visualizer drew (in env "main", which always exists)."""
        return Visdom(server="http://127.0.0.1", port=self.port, raise_exceptions=True, use_incoming_socket=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def options(port: int, display=True, display_id=0):
    return types.SimpleNamespace(display=display, display_server="http://127.0.0.1", display_port=port,
                                 display_id=display_id, print_freq=10)


def draw_a_run(vis, epochs=3, steps=4):
    """What the training loop sends over a short run; returns the last (scores, labels)."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(90, int), np.ones(30, int)]
    for epoch in range(epochs):
        for step in range(1, steps + 1):
            vis.losses(epoch + step / steps, {k: float(i + 1) / (epoch + step) for i, k in enumerate(LOSSES)})
        real = torch.rand(16, 3, 32, 32, generator=gen) * 2 - 1
        vis.images("train", real, real * 0.5)
        scores = np.r_[rng.normal(0, 1, 90), rng.normal(1 + epoch, 1, 30)].astype(np.float32)
        vis.metrics(epoch + 1, {"val_auroc": 0.6 + epoch / 10, "test_auroc": roc_auc(labels, scores),
                                "test_auprc": 0.5, "test_f1": 0.4, "test_eer": 0.3, "best_val_auroc": 0.6 + epoch / 10})
        vis.evaluation(epoch + 1, torch.from_numpy(scores), torch.from_numpy(labels))
        vis.images("test normal", real[:8], real[:8] * 0.9)
        vis.images("test abnormal", real[8:], -real[8:])
    return scores, labels


def windows(server, env) -> dict:
    return json.loads(server.client().get_window_data(env=env))


def traces(window) -> dict:
    return {t["name"]: t for t in window["content"]["data"]}


def start_training(cwd, port, niter):
    """Start `python train.py --display` on a tiny folder dataset: one batch per epoch, logs every step."""
    make_folder_dataset(cwd / "data", n_train=16, n_test_normal=6, n_test_abnormal=6)
    args = ["--dataset", "custom", "--dataroot", "data", "--isize", "8", "--nc", "3", "--ngf", "8", "--ndf", "8",
            "--nz", "8", "--niter", str(niter), "--n_critic", "2", "--device", "cpu", "--batchsize", "4",
            "--manualseed", "1", "--outf", "out", "--name", "dash/run", "--model", "w_skipganomaly",
            "--val_ratio", "0.25", "--print_freq", "1", "--save_image_freq", "2",
            "--display", "--display_server", "http://127.0.0.1", "--display_port", str(port)]
    with open(cwd / "output.txt", "w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return process, cwd


def finish_training(process, cwd):
    """(everything the run printed, its run folder), once it ended well."""
    try:
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    output = (cwd / "output.txt").read_text()
    assert process.returncode == 0, output
    return output, cwd / "out" / "dash" / "run"


@pytest.fixture(scope="session")
def offline_assets():
    """Visdom's page libraries installed from npm (does nothing when already in place)."""
    done = subprocess.run([str(ROOT / "dashboard" / "setup.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, f"dashboard/setup.sh failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def visdom_server(offline_assets, tmp_path_factory):
    server = VisdomServer(tmp_path_factory.mktemp("visdom"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def training_runs(visdom_server, tmp_path_factory):
    """Two tiny `train.py --display` runs side by side: one drawing into the server, one with none."""
    runs = {"server": start_training(tmp_path_factory.mktemp("display"), visdom_server.port, niter=2),
            "no server": start_training(tmp_path_factory.mktemp("no_server"), free_port(), niter=1)}
    return {name: finish_training(*run) for name, run in runs.items()}


def test_a_run_draws_losses_metrics_images_scores_and_roc_into_its_own_environment(visdom_server):
    lines = []
    vis = make_visualizer(options(visdom_server.port, display_id=5), RUN, log=lines.append)
    assert isinstance(vis, VisdomVisualizer)
    scores, labels = draw_a_run(vis)
    vis.close()

    env = "w_skipganomaly_cifar10_airplane"
    assert env_name(RUN) == env and env in visdom_server.client().get_env_list()
    drawn = windows(visdom_server, env)
    # Window ids start at --display_id and stay put: 3 epochs of re-plots made no new windows.
    assert sorted(drawn, key=int) == [str(i) for i in range(5, 12)]
    losses = traces(drawn[vis.windows["losses"]])
    assert set(losses) == set(LOSSES)
    assert losses["g_con"]["x"] == [e + s / 4 for e in range(3) for s in range(1, 5)]  # appended, in order
    assert losses["g_con"]["y"][-1] == pytest.approx(2 / (2 + 4))
    metrics = traces(drawn[vis.windows["metrics"]])
    assert metrics["val_auroc"]["x"] == [1, 2, 3] and metrics["best_val_auroc"]["y"][-1] == pytest.approx(0.8)
    assert metrics["test_auroc"]["y"][-1] == pytest.approx(roc_auc(labels, scores))
    for title in ("train", "test normal", "test abnormal"):
        image = drawn[vis.windows[f"images: {title}"]]
        assert image["type"] == "image" and image["content"]["src"].startswith("data:image/png;base64,")
    histogram = traces(drawn[vis.windows["histogram"]])
    assert sum(histogram["normal"]["y"]) == pytest.approx(1) and sum(histogram["abnormal"]["y"]) == pytest.approx(1)
    roc = drawn[vis.windows["roc"]]
    curve = traces(roc)["ROC"]
    assert (curve["x"][0], curve["y"][0], curve["x"][-1], curve["y"][-1]) == (0, 0, 1, 1)
    assert f"AUROC {roc_auc(labels, scores):.4f}" in roc["title"] and "epoch 3" in roc["title"]
    assert lines == []


def test_runs_of_a_sweep_do_not_overwrite_each_other(visdom_server):
    for run, value in (("sweep/a", 1.0), ("sweep/b", 2.0)):
        vis = make_visualizer(options(visdom_server.port), run, log=print)
        vis.losses(0.5, {"g_con": value})
        vis.close()
    for env, value in (("sweep_a", 1.0), ("sweep_b", 2.0)):
        assert traces(windows(visdom_server, env)["1"])["g_con"]["y"] == [value]


def test_the_server_starts_without_internet_and_downloads_nothing(visdom_server):
    assert "Downloading scripts" not in visdom_server.log()
    assert "while downloading" not in visdom_server.log()
    done = subprocess.run([sys.executable, str(ROOT / "dashboard" / "offline_assets.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_no_server_means_one_warning_and_training_goes_on():
    lines = []
    started = time.monotonic()
    vis = make_visualizer(options(free_port()), RUN, log=lines.append)
    assert isinstance(vis, NullVisualizer)
    draw_a_run(vis, epochs=1)
    vis.close()
    assert len(lines) == 1 and lines[0].startswith("warning: no Visdom server answers at")
    assert time.monotonic() - started < 10


@pytest.fixture
def silent_server():
    """The port of a server that accepts every connection and never replies (a hung or wedged server)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held, done = [], threading.Event()

    def accept_and_sleep():
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
    thread = threading.Thread(target=accept_and_sleep, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def without_login(monkeypatch, **login):
    """The environment with exactly the Visdom login given (none by default)."""
    for name in ("VISDOM_USERNAME", "VISDOM_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in login.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("login", [{}, {"VISDOM_USERNAME": "u", "VISDOM_PASSWORD": "p"}], ids=["no login", "login"])
def test_a_server_that_never_replies_costs_one_timeout_even_for_the_login(silent_server, monkeypatch, login):
    """visdom's own login request has no timeout: with a login, a silent server held the run forever."""
    monkeypatch.setattr("lib.display.visdom_visualizer.TIMEOUT_S", (1.0, 2.0))  # the 30 s read timeout, shorter
    without_login(monkeypatch, **login)
    lines, made = [], []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: made.append(make_visualizer(options(silent_server), RUN,
                                                                         log=lines.append)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the dashboard waited for a reply that never came"
    assert isinstance(made[0], NullVisualizer) and time.monotonic() - started < 10
    assert len(lines) == 1 and lines[0].startswith(f"warning: no Visdom server answers at http://127.0.0.1:"
                                                   f"{silent_server}; training goes on without the dashboard")


@pytest.mark.slow
def test_a_training_run_with_a_login_and_a_server_that_never_replies_warns_once_and_trains(silent_server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VISDOM_USERNAME": "u", "VISDOM_PASSWORD": "p"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny(niter=1), "--outf", "out", "--display",
                           "--display_server", "http://127.0.0.1", "--display_port", str(silent_server)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no Visdom server answers" in warnings[0], warnings
    assert time.monotonic() - started < 120  # one read timeout (30 s), then training as usual
    assert list((tmp_path / "out").rglob("results.json"))  # the run wrote its results


@pytest.mark.parametrize("password", [None, ""], ids=["unset", "empty"])
def test_a_user_name_without_a_password_is_one_warning_naming_it_and_contacts_no_server(monkeypatch, password):
    without_login(monkeypatch, VISDOM_USERNAME="u", **({} if password is None else {"VISDOM_PASSWORD": password}))
    lines = []
    vis = make_visualizer(options(free_port()), RUN, log=lines.append)
    assert isinstance(vis, NullVisualizer)
    assert lines == ["warning: VISDOM_USERNAME is set but VISDOM_PASSWORD is not; training goes on without the "
                     "dashboard (export both, the login the dashboard was started with, or unset VISDOM_USERNAME "
                     "and VISDOM_PASSWORD)"]


def test_display_off_draws_nothing_and_contacts_no_server():
    lines = []
    vis = make_visualizer(options(free_port(), display=False), RUN, log=lines.append)
    assert isinstance(vis, NullVisualizer) and lines == []


@pytest.mark.slow
def test_a_run_without_display_never_loads_visdom(tmp_path):
    code = ("import sys, train; from lib.errors import run_cli; "
            f"code = run_cli(train.main, {[*TINY, '--niter', '1', '--outf', 'out']!r}); "
            "print('loaded:', sorted(m for m in ('visdom', 'requests') if m in sys.modules)); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout


def test_a_server_lost_mid_run_gives_one_warning_and_training_goes_on(offline_assets, tmp_path):
    server = VisdomServer(tmp_path)
    lines = []
    try:
        vis = make_visualizer(options(server.port), RUN, log=lines.append)
        vis.losses(0.25, {"g_con": 1.0})
        assert lines == []
    finally:
        server.stop()
    draw_a_run(vis, epochs=2)
    vis.close()
    assert len(lines) == 1 and "stopped answering" in lines[0]


def test_a_port_that_is_not_visdom_counts_as_no_server(tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<html>not visdom</html>")
    port = free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                              "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:  # with nothing listening at all, the port would count as no server too
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert other.poll() is None and time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.1)
        lines = []
        vis = make_visualizer(options(port), RUN, log=lines.append)
        assert isinstance(vis, NullVisualizer) and len(lines) == 1
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_a_training_run_with_display_shows_every_loss_metric_image_histogram_and_roc(visdom_server, training_runs):
    output, folder = training_runs["server"]
    assert not [line for line in output.splitlines() if line.startswith("warning:")]
    drawn = {w["title"]: w for w in windows(visdom_server, "dash_run").values()}
    losses = traces(drawn["training losses"])
    assert {"g_adv", "g_con", "g_lat", "critic", "wasserstein", "gp"} <= set(losses)
    assert len(losses["wasserstein"]["x"]) == 2 * 3  # 12 training images / batch 4, every iteration
    metrics = traces(drawn["evaluation metrics"])
    for key in ("val_auroc", "test_auroc", "test_auprc", "test_f1", "test_eer", "best_val_auroc"):
        assert metrics[key]["x"] == [1, 2], key
    assert len((folder / "metrics.csv").read_text().splitlines()) == 1 + 2  # files are written as well
    for title in ("train", "test normal", "test abnormal"):
        assert drawn[f"{title}: x, G(x), |x - G(x)|"]["type"] == "image"
    histogram = traces(drawn["anomaly scores on the test set (epoch 2)"])
    assert set(histogram) == {"normal", "abnormal"}
    assert any(title.startswith("ROC on the test set (epoch 2, AUROC ") for title in drawn)


@pytest.mark.slow
def test_a_training_run_without_a_server_warns_once_and_writes_every_output(training_runs):
    output, folder = training_runs["no server"]
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no Visdom server answers" in warnings[0]
    for name in ("results.json", "metrics.csv", "histogram.csv", "train/weights/last.pt"):
        assert (folder / name).is_file(), name


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="needs Chromium (Debian package `chromium`)")
def test_a_runs_dashboard_renders_in_a_browser_with_every_file_served_locally(visdom_server, training_runs):
    page = open_dashboard(f"http://127.0.0.1:{visdom_server.port}/env/dash_run", plots=4, images=3,
                          screenshot=True)
    assert page.plots == 4  # losses, metrics, histogram, ROC: Plotly drew their SVG
    assert page.traces >= 6 + 6 + 2 + 2
    assert page.images == 3  # train, test normal, test abnormal grids
    assert page.failed == [] and page.external == []
    assert page.png.startswith(b"\x89PNG")


def serve(port: str, tmp_path) -> subprocess.CompletedProcess:
    """dashboard/serve.sh (what `make dashboard` runs) with PORT; HOME in tmp_path, so nothing of ours is touched."""
    env = {**os.environ, "PORT": port, "PYTHON": sys.executable, "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(ROOT / "dashboard" / "serve.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_make_dashboard_on_a_port_in_use_says_which_and_how_to_choose_another_before_starting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(str(port), tmp_path)
    assert done.returncode == 2 and done.stdout == ""  # the offline set-up did not even run
    line, = done.stderr.splitlines()
    assert line.startswith(f"error: port {port} is already in use") and "PORT=" in line and "make dashboard" in line


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "99999999999999999999", "80 81", "8097\n8098"])
def test_make_dashboard_refuses_a_port_that_is_not_a_port_number_in_one_line(port, tmp_path):
    done = serve(port, tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    shown = "$'8097\\n8098'" if "\n" in port else port  # as bash's printf %q quotes a control character
    assert done.stderr == f"error: PORT={shown} is not a port number: give one from 1 to 65535, e.g. " \
                          "PORT=8098 make dashboard\n"
