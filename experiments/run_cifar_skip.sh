#!/usr/bin/env bash
# Skip-GANomaly on CIFAR-10 (the baseline): each class in turn is the anomaly, 25 epochs.
#   bash experiments/run_cifar_skip.sh [extra train.py flags]
#   DEVICE=cpu CLASSES="bird cat" SEEDS="0 1 2" bash experiments/run_cifar_skip.sh --niter 5
set -uo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"  # also when linked from elsewhere

ALL_CLASSES=(airplane automobile bird cat deer dog frog horse ship truck)
run_classes --dataset cifar10 --isize 32 --niter 25 --model skipganomaly \
    --w_con 50 --w_adv 1 --w_lat 1 -- "$@"
