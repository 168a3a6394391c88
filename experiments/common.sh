# Shared by the run_*.sh scripts (source it; it runs nothing by itself).
#
# run_classes FLAG... -- EXTRA...: run train.py once per class in $CLASSES, with FLAG... then
# EXTRA... (the script's own arguments, so they can override any flag).
# Environment:
#   PYTHON   interpreter command (default: python)
#   DEVICE   gpu or cpu, passed as --device
#   CLASSES  space-separated classes to run instead of the script's list, e.g. CLASSES="bird cat"
#            (a name with a space may use _ instead: "Ankle_boot")
#   SEEDS    space-separated seeds, e.g. SEEDS="0 1 2": one run per seed and class, each in
#            its own run folder, <train.py's own run name>/seed<N> (e.g. w_skipganomaly/mnist/3/seed0,
#            w_skipganomaly-no_skip/... with --no_skip, <model>-control/... with --niter 0), so a
#            variant's sweep never lands in another's folders
# Every class is attempted; the exit status is 1 when any run failed (the last line names them),
# 130 on Ctrl-C. Bad input stops the sweep with exit status 2 and one line: flags the sweep sets
# for each run itself (--abnormal_class, --normal_class, --name; --manualseed with SEEDS), a seed
# that is not a whole number, a PYTHON that cannot run or lacks the requirements, arguments train.py
# refuses, and two classes that would share one run folder, before anything runs.

run_classes() {
    local flags=() extra=() python device=() seeds failed=() class seed status runs=0 names=() i model dataset
    while [[ $# -gt 0 && $1 != "--" ]]; do flags+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    extra=("$@")
    # A command with arguments ("python3 -X dev"), or one file whose path holds spaces.
    if [[ -n ${PYTHON:-} && -f $PYTHON ]]; then python=("$PYTHON"); else read -r -a python <<< "${PYTHON:-python}"; fi
    [[ -n ${DEVICE:-} ]] && device=(--device "$DEVICE")
    # Every word of them, over several lines too (read stops at a newline without -d '').
    read -r -d '' -a seeds <<< "${SEEDS:-}" || true
    if [[ -n ${CLASSES:-} ]]; then
        read -r -d '' -a ALL_CLASSES <<< "$CLASSES" || true
    fi
    check_sweep "${extra[@]}" || exit 2
    model=$(flag_value --model skipganomaly "${flags[@]}" "${extra[@]}")
    dataset=$(flag_value --dataset cifar10 "${flags[@]}" "${extra[@]}")
    local root total=$(( ${#ALL_CLASSES[@]} * (${#seeds[@]} > 0 ? ${#seeds[@]} : 1) ))
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # The runs' names, as train.py gives them, asked before anything runs: refused flags stop the sweep
    # first, and two classes that would share a run folder ("3 03", a --config naming its run) are found.
    # With SEEDS the sweep names the runs itself from them (the suffixes keep each variant's runs apart).
    run_names "$root" "${seeds[0]:-}" || exit $?

    for i in "${!ALL_CLASSES[@]}"; do
        class=${ALL_CLASSES[$i]}
        for seed in "${seeds[@]:-}"; do
            local run=("${python[@]}" "$root/train.py" "${flags[@]}" --abnormal_class "$class" "${device[@]}")
            [[ -n $seed ]] && run+=(--manualseed "$seed" --name "${names[$i]}/seed$seed")
            echo "Running $dataset, $model. Anomaly class: $class${seed:+, seed $seed}"
            status=0
            "${run[@]}" "${extra[@]}" || status=$?
            runs=$((runs + 1))
            if [[ $status -eq 130 ]]; then
                echo "interrupted at class $class" >&2
                exit 130
            elif [[ $status -eq 2 && $runs -eq 1 ]]; then
                echo "error: train.py refused the sweep's first run (class $class; the line above says why)," \
                     "and every run gets the same flags: the sweep stopped; fix it and rerun" >&2
                exit 2
            elif [[ $status -ne 0 ]]; then
                failed+=("$class${seed:+ (seed $seed)}")
            fi
        done
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        local list
        list=$(printf '%s, ' "${failed[@]}")
        echo "failed: ${list%, } (${#failed[@]} of $total runs): their cells in the collected table" \
             "(python -m tools.collect_results) stay empty (–) until they are rerun" >&2
        exit 1
    fi
}

# train.py's own run name for the run of each class in argv (classes, then the flags before
# --abnormal_class, then those after it), one a line: lib.options.parse, as train.py calls it.
RUN_NAMES='import sys
sys.path.insert(0, sys.argv[1])
from lib import options
from lib.errors import run_cli
n, k = int(sys.argv[2]), int(sys.argv[3])
classes, before, after = sys.argv[4:4 + n], sys.argv[4 + n:4 + n + k], sys.argv[4 + n + k:]
name = lambda c: options.parse(options.with_config([*before, "--abnormal_class", c, *after])[0]).name
sys.exit(run_cli(lambda _: print("\n".join(name(c) for c in classes)), []))'

# run_names ROOT SEED: fill run_classes's `names` (one per class, in ALL_CLASSES's order); one line
# on stderr and status 2 when train.py refuses the flags or two classes get one name (1: PYTHON failed).
run_names() {
    local errors listing status=0
    errors=$(mktemp) || return 1
    local seed=()
    [[ -n $2 ]] && seed=(--manualseed "$2")
    listing=$("${python[@]}" -c "$RUN_NAMES" "$1" "${#ALL_CLASSES[@]}" "${#flags[@]}" "${ALL_CLASSES[@]}" \
              "${flags[@]}" "${device[@]}" "${seed[@]}" "${extra[@]}" 2> "$errors") || status=$?
    local why
    why=$(tail -n 1 "$errors")
    rm -f "$errors"
    if [[ $status -ne 0 ]]; then
        echo "error: train.py refuses the sweep's runs (${why#error: }): nothing ran; fix that and rerun" >&2
        return $(( status == 2 ? 2 : 1 ))
    fi
    mapfile -t names <<< "$listing"
    local seen=" " name
    for name in "${names[@]}"; do
        if [[ $seen == *" $name "* ]]; then
            echo "error: CLASSES=\"${CLASSES:-}\" gives two classes the run name '$name': name each class once" >&2
            return 2
        fi
        seen+="$name "
    done
}

# check_sweep EXTRA...: one line on stderr and status 1 for what would break every run of the
# sweep (see the header); status 0 otherwise. Reads run_classes's `python` and `seeds`.
check_sweep() {
    local arg name typed seed
    if ! command -v "${python[0]:-}" > /dev/null; then
        echo "error: PYTHON=\"${PYTHON:-python}\" cannot be run: set PYTHON to the Python that has the" \
             "requirements, e.g. PYTHON=.venv/bin/python" >&2
        return 1
    fi
    # A Python without the requirements would fail every run with a traceback: say so once instead.
    # (It must answer "ok": a PYTHON that exits 0 without running the check, /bin/true, is no Python.)
    local answer missing
    answer=$("${python[@]}" -c 'import importlib.util as u
print("ok", *(m for m in ("torch", "torchvision", "numpy", "sklearn", "PIL") if u.find_spec(m) is None))' 2> /dev/null)
    missing=${answer#ok}
    missing=${missing# }
    if [[ $answer != ok* || -n $missing ]]; then
        [[ $answer == ok* ]] || missing="it does not run Python code"
        echo "error: PYTHON=\"${PYTHON:-python}\" lacks the project's requirements ($missing):" \
             "enter the project's environment (after make demo: . .venv/bin/activate) or set PYTHON=.venv/bin/python" >&2
        return 1
    fi
    if [[ ${#ALL_CLASSES[@]} -eq 0 ]]; then
        echo "error: CLASSES=\"${CLASSES:-}\" names no class: name some, e.g. CLASSES=\"bird cat\", or unset it for all" >&2
        return 1
    fi
    local seen=" " class i
    for i in "${!seeds[@]}"; do  # whole numbers, as train.py reads them: 01 is seed 1
        if ! [[ ${seeds[$i]} =~ ^[0-9]+$ ]]; then
            echo "error: SEEDS=\"$SEEDS\": '${seeds[$i]}' is not a seed: give whole numbers, e.g. SEEDS=\"0 1 2\"" >&2
            return 1
        fi
        seeds[$i]=$((10#${seeds[$i]}))
    done
    for class in "${ALL_CLASSES[@]}"; do
        if [[ $seen == *" $class "* ]]; then
            echo "error: CLASSES=\"${CLASSES:-}\" names '$class' twice: its second run would find the first's" \
                 "folder; name each class once" >&2
            return 1
        fi
        seen+="$class "
    done
    for class in "${seeds[@]}"; do
        [[ $seen == *" seed$class "* ]] && { echo "error: SEEDS=\"$SEEDS\" names $class twice: name each seed once" >&2; return 1; }
        seen+="seed$class "
    done
    for arg in "$@"; do
        name=${arg%%=*}
        [[ $name == --* && ${#name} -ge 4 ]] || continue  # argparse also takes unambiguous abbreviations
        typed=$name
        name="--$(tr - _ <<< "${name#--}")"  # and dashes for underscores (--abnormal-class)
        if [[ --abnormal_class == "$name"* || --normal_class == "$name"* ]]; then
            echo "error: $typed: the sweep sets --abnormal_class for each class itself (leave-one-class-out):" \
                 "choose the classes with CLASSES=\"...\" instead" >&2
            return 1
        elif [[ --name == "$name"* ]]; then
            echo "error: $typed would put every run of the sweep in one run folder: the sweep names its runs" \
                 "itself; choose where they go with --outf" >&2
            return 1
        elif [[ --manualseed == "$name"* && ${#seeds[@]} -gt 0 ]]; then
            echo "error: $typed and SEEDS both set the seed of every run: give the seeds in SEEDS only" >&2
            return 1
        fi
    done
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
