"""Joining or starting the Ray cluster a search runs on, and what it can grant.

Ray itself retries an unreachable cluster for many minutes and leaves a trial that asks for
more than any machine has pending forever: these checks refuse both in seconds, in one line.
"""
import contextlib
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from ..errors import UserError

# A head that is up answers a TCP connect at once.
CONNECT_TIMEOUT_S = 5


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity, as a container or `taskset` sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_local_resources(args) -> None:
    """A Ray started here has this machine's CPUs (or --num_cpus) and GPUs: a trial must fit them."""
    cpus = machine_cpus()
    if args.num_cpus is not None and args.num_cpus > cpus:
        raise UserError(f"--num_cpus {args.num_cpus}: this machine has {cpus} CPUs; give at most {cpus}, or "
                        "join a larger cluster with --address")
    limit = args.num_cpus or cpus
    if args.cpus_per_trial > limit:
        raise UserError(f"--cpus_per_trial {args.cpus_per_trial:g} is more than the {limit} CPUs of the Ray started "
                        f"here ({'--num_cpus' if args.num_cpus else 'this machine'}): no trial could start; "
                        f"give at most {limit}")
    if args.gpus_per_trial:
        import torch
        count = torch.cuda.device_count()
        if args.gpus_per_trial > count:
            raise UserError(f"--gpus_per_trial {args.gpus_per_trial:g} but this machine has {count} GPU(s): no "
                            "trial could start; lower it, or join a cluster with GPUs with --address")


def check_cluster_fits(ray, cpus: float, gpus: float, address: str) -> None:
    """A trial runs on one machine: some machine of the cluster must have its CPUs and GPUs."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        largest_ = ", ".join(sorted({f"{n.get('CPU', 0):g} CPU + {n.get('GPU', 0):g} GPU" for n in nodes})) or "none"
        raise UserError(f"no machine of the Ray cluster at '{address}' has {cpus:g} CPU + {gpus:g} GPU for a trial "
                        f"(machines: {largest_}): lower --cpus_per_trial/--gpus_per_trial")


def cluster_address(flag) -> tuple[str | None, str]:
    """(the cluster to join, the setting that named it); None: start Ray here. RAY_ADDRESS counts as for Ray."""
    env = os.environ.get("RAY_ADDRESS")
    address, source = (env, "RAY_ADDRESS") if env and flag in (None, "auto") else (flag, "--address")
    return (None if address == "local" else address), source


def split_address(address: str, source: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) of `address`, with an optional ray:// scheme."""
    scheme, sep, rest = address.rpartition("://")
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]/]+):(\d{1,5})", rest)
    if (sep and scheme != "ray") or not match or not 1 <= int(match.group(2)) <= 65535:
        raise UserError(f"{source} {address!a} is not a Ray address: give HOST:PORT of the head machine "
                        "(`ray start --head` prints it; port 6379 by default), ray://HOST:10001 for Ray Client, "
                        "or auto for the cluster started on this machine")
    return match.group(1).strip("[]"), int(match.group(2))


def check_reachable(address: str, source: str) -> None:
    """Fail in seconds when no Ray head answers at `address` (Ray itself retries for many minutes)."""
    shown = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # finds it as ray.init does
        try:
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise UserError("--address auto: no Ray cluster is running on this machine: start one with "
                            "`ray start --head`, or leave --address unset to start Ray for this search") from None
        shown = f"auto (the cluster last started here, {address})"
    host, port = split_address(address, source)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
            # Ray's head speaks gRPC: it answers the HTTP/2 preface with a SETTINGS frame.
            ok = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or speaks_http2(sock)
    except socket.gaierror as err:
        raise UserError(f"{source} {shown}: cannot resolve host '{host}' ({err.strerror}): check the name") from None
    except OSError as err:
        reason = err.strerror or f"no answer within {CONNECT_TIMEOUT_S} s"
        start = f"--ray-client-server-port {port}" if address.startswith("ray://") else f"--port {port}"
        raise UserError(f"{source} {shown}: no Ray cluster answers there ({reason}): start it with "
                        f"`ray start --head {start}` on {host}, or check the address and any firewall") from None
    if not ok:
        raise UserError(f"{source} {shown}: something answers there, but not a Ray head: give the address "
                        "`ray start --head` printed (port 6379 by default; the dashboard's 8265 is not it)")


def join_or_start(ray, address, num_cpus, root: Path, console: dict | None = None) -> None:
    """ray.init: join the cluster at `address`, or start Ray here (address None); trials import from `root`;
    `console`: ray.init's arguments for what reaches the terminal (lib/tune/progress.py)."""
    if address is not None:  # a head that answers but refuses us (e.g. no token) fails in seconds, not minutes
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(CONNECT_TIMEOUT_S))
    # Trials run in other processes: they import this project from the same path.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    try:
        ray.init(address=address or "local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": env}, **(console or {}))
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if address is None:
            raise UserError(f"cannot start Ray on this machine ({reason}): see `ray status`, or join a "
                            "running cluster with --address") from None
        raise UserError(f"cannot join the Ray cluster at '{address}' ({reason}): check `ray status` there; a "
                        "cluster with token authentication (Ray's default from 2.59) also needs "
                        "RAY_AUTH_MODE=token and its token (`ray get-auth-token`) here") from None


@contextlib.contextmanager
def held_stderr(hold: bool):
    """Hold back what reaches stderr (Ray's C++ retries too) and replay it only if the block succeeds,
    so that a refusal stays one line."""
    if not hold:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))


def speaks_http2(sock) -> bool:
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:
        return False
    return len(head) == 9 and head[3] == 4  # frame type 4: SETTINGS
