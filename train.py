"""Train (or, with --phase test, evaluate) Skip-GANomaly, Skip-WGANomaly or GANomaly.

    python train.py --dataset cifar10 --abnormal_class airplane --model w_skipganomaly
"""
import sys

from lib.errors import run_cli


def main(argv):
    # Imported inside run_cli, so a Python without the requirements gets one line saying how to enter them.
    from lib.commands.train import main as command
    return command(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
