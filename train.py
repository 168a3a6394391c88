"""Train (or, with --phase test, evaluate) Skip-GANomaly, Skip-WGANomaly or GANomaly.

    python train.py --dataset cifar10 --abnormal_class airplane --model w_skipganomaly
"""
import sys

from lib.commands.train import main
from lib.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
