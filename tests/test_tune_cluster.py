"""train_tune.py --address against a real two-node Ray cluster on this machine.

Both nodes are started with `ray start --block` in sessions of their own, so that the test stops
exactly what it started (never a cluster someone else runs here), whatever happens.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.helpers import ROOT, read_csv, tiny

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each node's whole process group (raylet, GCS, workers) at once, then SIGKILL to
    what is left after a few seconds (`ray start --block` can take 20 s to end on SIGTERM)."""
    def signal_all(sig):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    signal_all(signal.SIGKILL)  # the groups' other processes too, even where `ray start` has ended
    for proc in procs:
        proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    """(address, environment) of a head node with resource `first` and a second node with `second`,
    one CPU each, token authentication on (Ray's default), a token of their own."""
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ADDRESS": "",
           "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    nodes = []
    logs = tmp_path / "logs"
    logs.mkdir()
    # Ray's socket paths must fit in 107 bytes: pytest's tmp_path is too deep for them.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    try:
        nodes.append(subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                                       "--include-dashboard", "false",
                                       "--temp-dir", ray_tmp, "--resources", '{"first": 1}', *common],
                                      env=env, start_new_session=True, stdout=open(logs / "head.txt", "w"),
                                      stderr=subprocess.STDOUT))
        wait_for_nodes(address, env, 1, nodes, logs)
        nodes.append(subprocess.Popen([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1",
                                       "--resources", '{"second": 1}', *common],
                                      env=env, start_new_session=True, stdout=open(logs / "second.txt", "w"),
                                      stderr=subprocess.STDOUT))
        wait_for_nodes(address, env, 2, nodes, logs)
        yield address, env
    finally:
        stop(nodes)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def wait_for_nodes(address: str, env: dict, count: int, nodes, logs, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in nodes):
            output = "\n".join(f"{f.name}: {f.read_text()[-1500:]}" for f in sorted(logs.iterdir()))
            pytest.fail(f"a Ray node exited while starting:\n{output}")
        status = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True)
        if status.returncode == 0 and status.stdout.count(" node_") >= count:
            return
        time.sleep(1)
    pytest.fail(f"the cluster at {address} did not show {count} node(s) within {timeout} s")


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_runs_its_trials_on_both_nodes_of_a_cluster_it_joins(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out"  # on a real cluster: a folder every node mounts at this path (docs/tuning.md: On a cluster)
    env = {**env, "PYTHONPATH": str(ROOT)}
    space = tmp_path / "space.json"
    space.write_text('{"w_con": {"grid": [1, 50]}}')
    proc = subprocess.run([sys.executable, str(ROOT / "train_tune.py"), *tiny(abnormal_class=0), "--niter", "1",
                           "--address", address, "--cpus_per_trial", "1", "--space", str(space),
                           "--outf", str(out), "--name", "cluster"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = read_csv(out / "tune" / "cluster" / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    # One CPU per node and per trial: the two trials can only have run on different nodes.
    assert len({r["node"] for r in rows}) == 2 and all(len(r["node"]) > 20 for r in rows)
    for row in rows:  # each trial's run folder landed in the one --outf
        assert (out / "tune" / "cluster" / "runs" / row["trial"] / "results.json").is_file()
