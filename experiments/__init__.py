"""Class sweeps (run_*.sh) and studies, run from the repository root: `python -m experiments.fmnist_study`,
`python -m experiments.epoch_speed`."""
from lib.errors import UserError, require_environment

require_environment()  # a Python without the requirements: one line, not a traceback


def check_seeds(seeds) -> None:
    """A study's --seeds, refused once up front (not by each of its runs): each a seed train.py repeats."""
    if any(not 0 <= seed < 2**32 for seed in seeds):
        raise UserError("--seeds must be whole numbers from 0 to 2^32 - 1: a study's runs are repeatable")
