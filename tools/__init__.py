"""Developer tools, run from the repository root: `python -m tools.benchmark`, `python -m tools.baselines`,
`python -m tools.collect_results`. Not installed with the package; the user commands stay at the top level."""
import warnings

from lib.errors import require_environment

require_environment()  # a Python without the requirements: one line, not a traceback


def quiet_joblib() -> None:
    """Before a tool imports scikit-learn: joblib, imported with it, warns in two lines with its source where
    it cannot make its semaphore file (ulimit -f 0, a full /dev/shm) and then works serially, which these
    tools do anyway; the warning would stand before a tool's one-line refusal of the same limit."""
    warnings.filterwarnings("ignore", message=r".*joblib will operate in serial mode", category=UserWarning)

