"""Export a trained run for deployment: ONNX (onnxruntime) or OpenVINO IR, scored by predict.py with the same results.

    python export.py --weights RUN_DIR_OR_CHECKPOINT --format onnx --out EXPORT_DIR
    python predict.py --path IMAGES --weights EXPORT_DIR

Writes into a new folder the graphs of the networks the run's score measures, the score's fitted statistics
(score.npz) and manifest.json (model, score, image size, thresholds, versions, sha256 of every file and of
the checkpoint). Needs the optional packages of the `export` extra.
"""
import sys

from lib.errors import deferred_interrupts, run_cli


def main(argv):
    # Imported here, inside run_cli, with interrupts held until torch has loaded: Ctrl-C is one line, exit 130.
    with deferred_interrupts():
        from lib.commands.export import main as command
    return command(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
