"""The code of export.py (its docstring has the usage): a trained run as ONNX or OpenVINO files for predict.py."""
if __name__ == "__main__":  # python -m lib.commands.export: run as the installed command is, importing this
    from ..errors import run_command_module  # module inside the error handling (no numpy: one line)
    run_command_module(__spec__.name)

import argparse
from pathlib import Path

from ..errors import OneLineParser, UserError, deferred_interrupts
from ..export import RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="export.py", description="Export a trained run's scoring for onnxruntime or OpenVINO; "
                                                   "predict.py --weights OUT then scores with it.")
    a = p.add_argument
    a("--weights", required=True, help="a run folder (its train/weights/best.pt is used) or a .pt checkpoint")
    a("--format", default="onnx", choices=tuple(RUNTIMES),
      help="onnx (default): scored with onnxruntime; openvino: OpenVINO IR, scored with the OpenVINO runtime")
    a("--out", required=True, help="a new (or empty) folder for the export, outside any run folder")
    a("--verbose", action="store_true", help="print tracebacks")
    return p


def main(argv):
    args = build_parser().parse_args(argv)
    for flag in ("weights", "out"):
        if not getattr(args, flag).strip():
            raise UserError(f"--{flag} is empty: give a {'folder' if flag == 'out' else 'run folder or checkpoint'}")
    out = Path(args.out)
    with deferred_interrupts():  # torch loads only now: a Python without it says so in one line (errors.run_cli)
        from ..export.write import CHECK_IMAGES, export
    manifest = export(args.weights, args.format, out)
    files = ", ".join(sorted(manifest["files"]))
    print(f"model: {manifest['model']} (isize {manifest['image']['isize']}, nc {manifest['image']['nc']}), "
          f"epoch {manifest['epoch']}, score: {manifest['score']}")
    print(f"networks exported: {', '.join(manifest['networks'])} ({manifest['runtime']} "
          f"{manifest['versions'][manifest['runtime']]} scored {CHECK_IMAGES} check images as "
          "PyTorch does)")
    if manifest["precision"]["run"] != "fp32":
        print(f"notice: this run scores in {manifest['precision']['run']} with PyTorch on this CPU; the export "
              "computes in fp32, so its scores differ from the run's own in about the third digit")
    print(f"outputs: {out} ({files})")
    print(f"next: python predict.py --path IMAGES --weights {out}")
    return 0
