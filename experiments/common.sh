# Shared by the run_*.sh scripts (source it; it runs nothing by itself).
#
# run_classes FLAG... -- EXTRA...: run train.py once per class in $CLASSES, with FLAG... then
# EXTRA... (the script's own arguments, so they can override any flag).
# Environment:
#   PYTHON   interpreter command (default: python)
#   DEVICE   gpu or cpu, passed as --device
#   CLASSES  space-separated classes to run instead of the script's list, e.g. CLASSES="bird cat"
#   SEEDS    space-separated seeds, e.g. SEEDS="0 1 2": one run per seed and class, each in
#            its own run folder (<model>/<dataset>/<class>/seed<N>)
# Every class is attempted; the exit status is 1 when any run failed, 130 on Ctrl-C.

run_classes() {
    local flags=() extra=() python device=() seeds failed=() class seed status name model dataset
    while [[ $# -gt 0 && $1 != "--" ]]; do flags+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    extra=("$@")
    read -r -a python <<< "${PYTHON:-python}"
    [[ -n ${DEVICE:-} ]] && device=(--device "$DEVICE")
    read -r -a seeds <<< "${SEEDS:-}"
    [[ -n ${CLASSES:-} ]] && read -r -a ALL_CLASSES <<< "$CLASSES"
    model=$(flag_value --model skipganomaly "${flags[@]}" "${extra[@]}")
    dataset=$(flag_value --dataset cifar10 "${flags[@]}" "${extra[@]}")
    local train
    train="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/train.py"

    for class in "${ALL_CLASSES[@]}"; do
        for seed in "${seeds[@]:-}"; do
            local run=("${python[@]}" "$train" "${flags[@]}" --abnormal_class "$class" "${device[@]}")
            if [[ -n $seed ]]; then
                name="$model/$dataset/${class//[\/ ]/_}/seed$seed"
                run+=(--manualseed "$seed" --name "$name")
            fi
            echo "Running $dataset, $model. Anomaly class: $class${seed:+, seed $seed}"
            status=0
            "${run[@]}" "${extra[@]}" || status=$?
            if [[ $status -eq 130 ]]; then
                echo "interrupted at class $class" >&2
                exit 130
            elif [[ $status -ne 0 ]]; then
                failed+=("$class${seed:+ (seed $seed)}")
            fi
        done
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "failed: ${failed[*]}" >&2
        exit 1
    fi
}

# flag_value FLAG DEFAULT ARG...: the last value given to FLAG in ARG..., else DEFAULT.
flag_value() {
    local flag=$1 value=$2
    shift 2
    while [[ $# -gt 0 ]]; do
        if [[ $1 == "$flag" && $# -gt 1 ]]; then value=$2; shift; fi
        [[ $1 == "$flag="* ]] && value=${1#*=}
        shift
    done
    echo "$value"
}
