#!/usr/bin/env bash
# Skip-WGANomaly on CIFAR-10: each class in turn is the anomaly, 15 epochs (the paper's table).
#   bash experiments/run_cifar_wskip.sh [extra train.py flags]
#   DEVICE=cpu CLASSES="bird cat" SEEDS="0 1 2" bash experiments/run_cifar_wskip.sh --niter 5
# Ablation row "no skip connections": add --no_skip --outf output/no_skip.
set -uo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"  # also when linked from elsewhere

ALL_CLASSES=(airplane automobile bird cat deer dog frog horse ship truck)
run_classes --dataset cifar10 --isize 32 --niter 15 --model w_skipganomaly \
    --w_con 50 --w_adv 1 --w_lat 1 --display -- "$@"
