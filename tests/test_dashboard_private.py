"""`make dashboard` (dashboard/serve.sh) is private: it listens on localhost alone unless SHARE=1, which
listens on every interface and lets no one in without the login given in VISDOM_USERNAME/VISDOM_PASSWORD."""
import hashlib
import http.cookiejar
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytest.importorskip("visdom")
# visdom 0.2.4 calls the deprecated Logger.warn when a client skips the incoming socket.
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
USER, PASSWORD = "me", "a long secret"
LISTEN = "0A"  # the TCP state in /proc/net/tcp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> set:
    """The addresses a socket listens on at `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, at = local.split(":")
            if state != LISTEN or int(at, 16) != port:
                continue
            # The address is in the kernel's byte order: each 32-bit word little-endian.
            raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
            found.add(ipaddress.ip_address(raw))
    return found


def environment(tmp_path: Path, port: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARE", "VISDOM_USERNAME", "VISDOM_PASSWORD")}
    # HOME in tmp_path: visdom keeps its windows and its cookie secret in ~/.visdom.
    return {**env, "PORT": str(port), "PYTHON": sys.executable, "HOME": str(tmp_path), **extra}


def ask(session, url, data=None):
    """(status, body) of a request; an error status is an answer too."""
    try:
        with session.open(url, data=data, timeout=5) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def client():
    """A client that keeps cookies and ignores any proxy."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


class Dashboard:
    """`dashboard/serve.sh` running on a free port, until `stop`."""

    def __init__(self, tmp_path: Path, **env):
        self.port, self.log_path = free_port(), tmp_path / "serve.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                ["bash", str(ROOT / "dashboard" / "serve.sh"), "-env_path", str(tmp_path / "envs"),
                 "-logging_level", "WARNING"], env=environment(tmp_path, self.port, **env), stdout=log,
                stderr=subprocess.STDOUT)
        deadline, probe = time.monotonic() + 60, client()
        while True:  # tornado listens on every address before it serves the first request
            try:
                ask(probe, f"http://127.0.0.1:{self.port}/")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"dashboard/serve.sh did not start:\n{self.log_path.read_text()}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # serve.sh has become the server (exec)
        self.process.wait()


@pytest.fixture
def dashboard(tmp_path):
    started = []

    def start(**env) -> Dashboard:
        started.append(Dashboard(tmp_path, **env))
        return started[-1]
    yield start
    for server in started:
        server.stop()


def test_make_dashboard_listens_on_localhost_alone(dashboard):
    server = dashboard()
    addresses = listening(server.port)
    assert addresses and all(address.is_loopback for address in addresses), addresses


def test_shared_it_listens_everywhere_and_shows_nothing_before_the_login(dashboard, tmp_path):
    server = dashboard(SHARE="1", VISDOM_USERNAME=USER, VISDOM_PASSWORD=PASSWORD)
    assert any(address.is_unspecified for address in listening(server.port))
    url, stranger = f"http://127.0.0.1:{server.port}", client()
    status, page = ask(stranger, f"{url}/")
    assert status == 200 and "<title>Visdom Login</title>" in page  # the login form, not the dashboard
    assert ask(stranger, f"{url}/env/main")[0] == 400
    assert ask(stranger, f"{url}/win_data", json.dumps({"eid": "main"}).encode())[0] == 400

    user = client()  # the page sends the SHA-256 of the password, as the browser's login form does
    login = json.dumps({"username": USER, "password": hashlib.sha256(PASSWORD.encode()).hexdigest()}).encode()
    assert ask(user, f"{url}/", login)[0] == 200
    assert ask(user, f"{url}/env/main")[0] == 200
    assert (tmp_path / ".visdom" / "COOKIE_SECRET").stat().st_mode & 0o077 == 0  # its secret is private


@pytest.mark.parametrize("login", [{}, {"VISDOM_USERNAME": USER}, {"VISDOM_PASSWORD": PASSWORD}])
def test_sharing_without_a_login_is_refused_in_one_line_before_anything_starts(tmp_path, login):
    done = subprocess.run(["bash", str(ROOT / "dashboard" / "serve.sh")], capture_output=True, text=True,
                          env=environment(tmp_path, free_port(), SHARE="1", **login), timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    line, = done.stderr.splitlines()
    assert line.startswith("error: SHARE=1 opens the dashboard") and "VISDOM_USERNAME and VISDOM_PASSWORD" in line
    assert not (tmp_path / ".visdom").exists()


@pytest.mark.slow
def test_a_training_run_given_the_login_draws_into_a_shared_dashboard(dashboard, tmp_path):
    import visdom

    from tests.helpers import tiny
    server = dashboard(SHARE="1", VISDOM_USERNAME=USER, VISDOM_PASSWORD=PASSWORD)
    env = {**environment(tmp_path, server.port), "VISDOM_USERNAME": USER, "VISDOM_PASSWORD": PASSWORD,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny(niter=1), "--outf", "out", "--display",
                           "--display_server", "http://127.0.0.1", "--display_port", str(server.port)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "dashboard" not in proc.stderr.lower(), proc.stderr
    viewer = visdom.Visdom(server="http://127.0.0.1", port=server.port, username=USER, password=PASSWORD,
                           use_incoming_socket=False, raise_exceptions=True)
    assert set(viewer.get_env_list()) - {"main"}  # the run's windows are there


WRONG_LOGINS = {"a wrong password": {"VISDOM_USERNAME": USER, "VISDOM_PASSWORD": "not it"},
                "an unknown user": {"VISDOM_USERNAME": "someone", "VISDOM_PASSWORD": PASSWORD}}


@pytest.mark.parametrize("login", WRONG_LOGINS.values(), ids=WRONG_LOGINS.keys())
def test_a_login_the_shared_dashboard_refuses_is_one_warning_naming_it(dashboard, monkeypatch, login):
    """visdom's client raised RuntimeError('Authentication failed') out of train.py."""
    import types

    from lib.display.visdom_visualizer import VisdomVisualizer
    from lib.display.visualizer import NullVisualizer, make_visualizer
    server = dashboard(SHARE="1", VISDOM_USERNAME=USER, VISDOM_PASSWORD=PASSWORD)
    opt = types.SimpleNamespace(display=True, display_server="http://127.0.0.1", display_port=server.port,
                                display_id=1)
    for name, value in login.items():
        monkeypatch.setenv(name, value)
    lines = []
    assert isinstance(make_visualizer(opt, "run", log=lines.append), NullVisualizer)
    assert lines == [f"warning: the Visdom server at http://127.0.0.1:{server.port} refused the login in "
                     "VISDOM_USERNAME and VISDOM_PASSWORD (HTTP 400); training goes on without the dashboard "
                     "(export the user name and password the dashboard was started with, or unset both for a "
                     "dashboard without a login)"]
    monkeypatch.setenv("VISDOM_USERNAME", USER)  # the right login draws, as before
    monkeypatch.setenv("VISDOM_PASSWORD", PASSWORD)
    vis = make_visualizer(opt, "run", log=lines.append)
    assert isinstance(vis, VisdomVisualizer) and len(lines) == 1
    vis.close()


@pytest.mark.slow
@pytest.mark.parametrize("login, named", [({"VISDOM_USERNAME": USER, "VISDOM_PASSWORD": "not it"}, "refused the login"),
                                          ({"VISDOM_USERNAME": USER}, "VISDOM_PASSWORD is not")],
                         ids=["a wrong password", "no password"])
def test_a_training_run_with_a_wrong_or_half_login_warns_once_and_trains(dashboard, tmp_path, login, named):
    from tests.helpers import tiny
    server = dashboard(SHARE="1", VISDOM_USERNAME=USER, VISDOM_PASSWORD=PASSWORD)
    env = {**environment(tmp_path, server.port), **login, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny(niter=1), "--outf", "out", "--display",
                           "--display_server", "http://127.0.0.1", "--display_port", str(server.port)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and named in warnings[0] and "goes on without the dashboard" in warnings[0], warnings
    assert list((tmp_path / "out").rglob("results.json"))  # the run wrote its results
