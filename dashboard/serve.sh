#!/usr/bin/env bash
# Start a Visdom server that works offline, on port $PORT (default 8097); extra arguments go to
# visdom.server (e.g. -env_path DIR). Windows are saved under ~/.visdom by default.
# It is private: it listens on localhost alone. SHARE=1 listens on every interface and asks for a
# login, whose user name and password it takes from VISDOM_USERNAME and VISDOM_PASSWORD.
# A port that is taken (or not a port), or SHARE=1 without both, is refused with one line and exit
# status 2, before the offline set-up or the server starts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
# A value as it was given, quoted where it holds a newline or another control character: one line.
shown() { if [[ $1 == *[[:cntrl:]]* ]]; then printf '%q' "$1"; else printf '%s' "$1"; fi; }
port="${PORT:-8097}"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || (( 10#$port < 1 || 10#$port > 65535 )); then
    echo "error: PORT=$(shown "$port") is not a port number: give one from 1 to 65535, e.g. PORT=8098 make dashboard" >&2
    exit 2
fi
if ! command -v "$PYTHON" > /dev/null; then
    echo "error: PYTHON=$PYTHON cannot be run: run make dashboard (it creates .venv) or set PYTHON" >&2
    exit 2
fi
case "${SHARE:-0}" in
    0) access=(-bind_local) ;;
    1)
        if [[ -z "${VISDOM_USERNAME:-}" || -z "${VISDOM_PASSWORD:-}" ]]; then
            echo "error: SHARE=1 opens the dashboard to every machine that can reach this one, so it needs a" \
                 "login: export VISDOM_USERNAME and VISDOM_PASSWORD, then run SHARE=1 make dashboard again" >&2
            exit 2
        fi
        # visdom.server reads the login from these instead of prompting. The secret that signs its
        # login cookies is ~/.visdom/COOKIE_SECRET: made here, readable by this user alone (visdom's
        # own would be readable by all), from VISDOM_COOKIE if given, else at random.
        export VISDOM_USE_ENV_CREDENTIALS=1
        cookie="$HOME/.visdom/COOKIE_SECRET"
        if [[ ! -s $cookie ]]; then
            mkdir -p "$HOME/.visdom"
            (umask 077 && "$PYTHON" -c 'import os, secrets, sys
sys.stdout.write(os.environ.get("VISDOM_COOKIE") or secrets.token_hex(32))' > "$cookie")
        fi
        access=(-enable_login) ;;
    *)
        echo "error: SHARE=$(shown "$SHARE"): give SHARE=1 to share the dashboard (with a login) or leave it out to keep" \
             "it on localhost" >&2
        exit 2 ;;
esac
# Bind the port as the server will (tornado: every address family, SO_REUSEADDR), then let it go.
"$PYTHON" - "$((10#$port))" <<'PY'
import errno
import socket
import sys

def taken(port):
    """None if the server can listen on `port`, else why not."""
    for family, kind, proto, _, address in socket.getaddrinfo(None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                                              0, socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as err:
                return err.errno
    return None

port = int(sys.argv[1])
why = taken(port)
if why is None:
    sys.exit(0)
free = next((p for p in range(port + 1, min(port + 100, 65536)) if p > 1023 and taken(p) is None), None)
fix = f"PORT={free} make dashboard" if free else "PORT=NNNN make dashboard with a free port"
if why == errno.EADDRINUSE:
    print(f"error: port {port} is already in use (a dashboard may already be running there: "
          f"http://localhost:{port}): start this one on another port, e.g. {fix}", file=sys.stderr)
elif why == errno.EACCES:
    print(f"error: port {port} needs administrator rights: use a port above 1023, e.g. {fix}", file=sys.stderr)
else:
    print(f"error: cannot listen on port {port} ({errno.errorcode.get(why, why)}): try another, e.g. {fix}",
          file=sys.stderr)
sys.exit(2)
PY
"$root/dashboard/setup.sh"
exec "$PYTHON" -m visdom.server -port "$((10#$port))" "${access[@]}" "$@"
