"""Reference values from the original code's own training step and test, for the parity test.

    python -m tools.original_reference [--original-code PATH] [--out tests/data/original_reference.json]

Runs the original Skip-GANomaly and Skip-WGANomaly (tools/original/runner.py `steps`) as tiny
models for ten steps on seeded random data, ten so that Skip-WGANomaly's generator updates (its
steps 4 and 9) are included, then its test() on 24 images, and writes both results into one
JSON file: losses per step, weight fingerprints, test scores (see runner.steps). What the noise
buffer held before it was zeroed is uninitialised memory, different in every process: it is
printed, and left out of the file so that regenerating it gives the same bytes.
"""
import json
import sys
from pathlib import Path

from lib.errors import OneLineParser, run_cli
from lib.fast.hardware import capability
from lib.files import write_text
from tools.original.launch import DEFAULT_ORIGINAL_CODE, ROOT, check_original_code, run_steps

MODELS = ("skipganomaly", "w_skipganomaly")
SPEC = {"seed": 0, "data_seed": 1, "isize": 32, "nc": 3, "nz": 8, "ngf": 4, "ndf": 4, "batchsize": 8,
        "steps": 10, "test_images": 24, "flags": {}}
DEFAULT_OUT = ROOT / "tests" / "data" / "original_reference.json"


def reference(original_code: Path) -> dict:
    """Both models' `steps` results, keyed by model name, with the CPU kernels' level: on another
    (AVX2 or AVX-512) torch sums in another order, and the floats move in their last digits."""
    return {"generated_by": "python -m tools.original_reference", "cpu_capability": capability(),
            "models": {model: run_steps(original_code, {"model": model, **SPEC}) for model in MODELS}}


def reproducible(result: dict) -> dict:
    """`result` less the noise buffer's contents before zeroing (uninitialised memory)."""
    return {**result, "models": {name: {k: v for k, v in model.items() if k != "noise_at_construction"}
                                 for name, model in result["models"].items()}}


def main(argv) -> None:
    p = OneLineParser(prog="python -m tools.original_reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--original-code", default=str(DEFAULT_ORIGINAL_CODE),
                   help="folder of the original code (default: %(default)s)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file to write (default: %(default)s)")
    args = p.parse_args(argv)
    original_code = check_original_code(args.original_code)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = reference(original_code)
    write_text(out, json.dumps(reproducible(result), indent=1) + "\n")
    for name, model in result["models"].items():
        noise = model["noise_at_construction"]
        print(f"{name}: the uninitialised noise buffer held {'only zeros' if noise['all_zero'] else 'non-zero values'} "
              f"(non-zero fraction {noise['nonzero_fraction']:.2g}, largest magnitude {noise['max_abs']:.2g}); "
              "zeroed for the reference")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
