"""Search train.py's options with Ray Tune; each trial is one train.py run.

    python train_tune.py --dataset cifar10 --abnormal_class bird --model w_skipganomaly \
        --space experiments/tune_space.json --num_samples 1 --scheduler asha

Trials are ranked by the validation metric (held-out normal and abnormal images,
disjoint from the test set); test AUROC is only recorded. `--original` runs the
original's search instead, ranked on the test set as it was. `--tune False` runs one
plain training instead, without Ray. Everything a user can get wrong is refused
with one line before Ray starts (or, for what only the cluster knows, before the
search writes anything), every run the search space can draw included, checked as
train.py checks its command line. Ctrl-C (or SIGTERM) stops a search in any phase
with one line and exit status 130 (143), results.csv listing the trials that
finished; the same command with --name NAME --restore continues it.
"""
import sys

from lib.errors import run_cli


def main(argv):
    # Imported inside run_cli, so a Python without the requirements gets one line saying how to enter them.
    from lib.commands.train_tune import main as command
    return command(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
