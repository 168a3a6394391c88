"""Developer tools, run from the repository root: `python -m tools.benchmark`, `python -m tools.baselines`,
`python -m tools.collect_results`. Not installed with the package; the user commands stay at the top level."""
from lib.errors import require_environment

require_environment()  # a Python without the requirements: one line, not a traceback

