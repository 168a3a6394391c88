"""The installed console commands (pyproject.toml's [project.scripts]).

Each imports its command only inside `run_cli`, as train.py does from a checkout: a Python that lacks
the requirements (numpy, torch) then gets one line saying what is missing and how to go on, not a
traceback. This module imports nothing else of the package at load.
"""


def _run(command: str) -> None:
    from .errors import run_command_module
    run_command_module(f"{__package__}.commands.{command}")


def train() -> None:
    _run("train")


def tune() -> None:
    _run("train_tune")


def predict() -> None:
    _run("predict")


def export() -> None:
    _run("export")
