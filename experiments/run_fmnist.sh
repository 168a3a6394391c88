#!/usr/bin/env bash
# Skip-WGANomaly on Fashion-MNIST (grey, --nc 1): each of the 10 classes in turn is the anomaly.
#   bash experiments/run_fmnist.sh [extra train.py flags]
#   DEVICE=cpu CLASSES="Trouser Bag" SEEDS="0 1 2" bash experiments/run_fmnist.sh --niter 5
set -uo pipefail
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"  # also when linked from elsewhere

ALL_CLASSES=("T-shirt/top" Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot")
run_classes --dataset fashion-mnist --isize 32 --nc 1 --niter 15 --model w_skipganomaly \
    --w_con 50 --w_adv 1 --w_lat 1 --display -- "$@"
