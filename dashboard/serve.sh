#!/usr/bin/env bash
# Start a Visdom server that works offline, on port $PORT (default 8097); extra arguments go to
# visdom.server (e.g. -env_path DIR, -bind_local). Windows are saved under ~/.visdom by default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
"$root/dashboard/setup.sh"
exec "$PYTHON" -m visdom.server -port "${PORT:-8097}" "$@"
