#!/usr/bin/env bash
# Make the installed visdom serve its page's JS/CSS/fonts from local files (fetched once from the
# npm registry), so `python -m visdom.server` starts and renders without internet. Idempotent.
# PYTHON selects the interpreter whose visdom is set up (default: the project's .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$root/dashboard/offline_assets.py" "$@"
