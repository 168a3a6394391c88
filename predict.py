"""Score new images with a trained Skip-GANomaly, Skip-WGANomaly or GANomaly model.

    python predict.py --path IMAGE_OR_FOLDER --weights RUN_DIR_OR_CHECKPOINT
    python predict.py --path IMAGE_OR_FOLDER --weights EXPORT_DIR    # export.py's: onnxruntime or OpenVINO

Writes predictions.csv (path, score, its reconstruction and feature parts, normal/abnormal)
and one captioned strip per image (input | reconstruction | the score's map: where in the image
the score comes from; the caption gives the score, threshold and decision) into --out. The model,
image size and channels come from the checkpoint. An --out holding earlier predictions is
refused unless --overwrite is given; a run that fails leaves --out as it was.
"""
import sys

from lib.errors import deferred_interrupts, run_cli


def main(argv):
    # Imported here, inside run_cli, with interrupts held until torch has loaded: Ctrl-C is one line, exit 130.
    with deferred_interrupts():
        from lib.commands.predict import main as predict
    return predict(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
