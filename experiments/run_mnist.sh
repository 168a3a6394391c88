#!/usr/bin/env bash
# Skip-WGANomaly on MNIST (grey, --nc 1): each digit in turn is the anomaly, 15 epochs.
#   bash experiments/run_mnist.sh [extra train.py flags]
#   DEVICE=cpu CLASSES="0 1" SEEDS="0 1 2" bash experiments/run_mnist.sh --niter 5
set -uo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"  # also when linked from elsewhere

ALL_CLASSES=(0 1 2 3 4 5 6 7 8 9)
run_classes --dataset mnist --isize 32 --nc 1 --niter 15 --model w_skipganomaly \
    --w_con 50 --w_adv 1 --w_lat 1 --display -- "$@"
