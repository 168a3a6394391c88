"""The code of predict.py (its docstring has the usage): score new images with a trained run."""
if __name__ == "__main__":  # python -m lib.commands.predict: run as the installed command is, importing this
    from ..errors import run_command_module  # module inside the error handling (no numpy: one line)
    run_command_module(__spec__.name)

import argparse
import shutil
import sys
from pathlib import Path

from .. import options
from ..errors import OneLineParser, UserError, deferred_interrupts

SHOW_UNREADABLE = 20  # the summary names this many unreadable files, then counts the rest



def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="predict.py", description="Score images with a trained model: anomaly scores, "
                                               "normal/abnormal decisions and anomaly maps.")
    a = p.add_argument
    a("--path", required=True, help="an image, or a folder of images (subfolders included)")
    a("--weights", required=True,
      help="a run folder (its train/weights/best.pt is used), a .pt checkpoint, or an export folder (export.py: "
           "scored with onnxruntime or OpenVINO on the CPU)")
    a("--out", default=None, help="output folder (default: <run folder>/predict)")
    a("--overwrite", action="store_true",
      help="replace the predictions.csv and maps/ already in --out (without it, such an --out is refused)")
    a("--threshold", default="normal", metavar="T|normal|f1",
      help="score at or above which an image is abnormal; 'normal' (default): the one stored at "
           "training from normal validation images; 'f1': the F1-optimal one on the labelled test set")
    a("--batchsize", type=int, default=64, help="images scored at once (default: 64; at most the number of images)")
    a("--device", default="gpu", choices=("gpu", "cpu"),
      help="gpu (default) falls back to cpu without CUDA")
    a("--maps", default="strip", choices=("strip", "none"),
      help="strip (default): save input | reconstruction | the score's map per image, captioned with the "
           "score, threshold and decision; none: scores only")
    a("--masks", default=None, help="a folder of ground-truth masks laid out as --path's images (MVTec AD's "
      "ground_truth/): the maps' pixel AUROC and PRO, in pixel_metrics.json (docs/inspection.md)")
    a("--verbose", action="store_true", help="print tracebacks")
    return p


def resolve_device(name: str):
    import torch
    if name == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "gpu":
        print("notice: CUDA is not available, scoring on the CPU (--device cpu silences this)")
    return torch.device("cpu")


def main(argv):
    args = build_parser().parse_args(argv)
    if not 1 <= args.batchsize <= options.C_INT_MAX:
        raise UserError(f"--batchsize must be between 1 and {options.C_INT_MAX} (got {args.batchsize})")
    for flag in ("path", "weights", "out"):
        if getattr(args, flag) is not None and not getattr(args, flag).strip():
            raise UserError(f"--{flag} is empty: give a {'folder' if flag == 'out' else 'file or folder'}")
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"--path '{path}' does not exist; give an image file or a folder of images")
    if not (path.is_file() or path.is_dir()):
        raise UserError(f"--path '{path}' is neither a file nor a folder; give an image file or a folder of images")
    with deferred_interrupts():  # torch loads only now: a Python without it says so in one line (errors.run_cli)
        import torch

        from ..export.runtime import is_export, load_export
        from ..predict.masks import check_masks, score_against_masks
        from ..predict.out import MAPS, PREDICTIONS, check_out, close_out, open_out, publish
        from ..predict.score import check_batch_memory, choose_threshold, find_images, load_model, predict
        from ..runs.folder import run_folder_of
        from ..scoring.policy import describe
        from ..training import checkpoint
    # Everything that can be refused is refused before the model is loaded or a file written; another
    # predict.py writing into --out is found when --out is locked, just before scoring (open_out).
    # An export folder (export.py) scores with its runtime on the CPU; anything else is a run or a checkpoint.
    exported = is_export(args.weights)
    if exported and args.masks is not None:  # it carries its score's map alone, not the one the run chose
        raise UserError(f"--masks measures the map the run chose on its validation masks, which an export does "
                        f"not carry: give --weights the run folder instead of the export '{args.weights}'")
    run = Path(args.weights) if exported else run_folder_of(checkpoint.find(args.weights, "best"))
    out = Path(args.out) if args.out else run / "predict"
    check_out(out, path, args.overwrite, run)
    device = torch.device("cpu") if exported else resolve_device(args.device)
    model, ckpt, opt = (load_export if exported else load_model)(args.weights, device)
    files, skipped = find_images(path, exclude=out)
    if args.masks is not None:
        check_masks(Path(args.masks), files, path if path.is_dir() else path.parent, opt.isize)
    batchsize = min(args.batchsize, len(files))
    check_batch_memory(opt, batchsize, device)
    stored = ckpt.get("threshold") or {}
    threshold, threshold_lines = choose_threshold(stored, args.threshold)

    epoch = ckpt.get("epoch")
    print(f"model: {opt.model} (isize {opt.isize}, nc {opt.nc}) from {ckpt['path']}, epoch {epoch}")
    print(describe(model.scoring, weight_chosen=opt.score_weight == "val"))
    if model.speed.notice:
        print(f"notice: {model.speed.notice}")
    if "epoch" in stored and stored["epoch"] != epoch:
        print(f"notice: the stored threshold was chosen at epoch {stored['epoch']}, these weights are "
              f"from epoch {epoch}; use best.pt or pass --threshold")
    print("\n".join(threshold_lines))

    # A signal while --out is being claimed is held until the clean-up below is armed, so that it never
    # leaves the lock or the staging folder behind (SIGTERM, SIGHUP and Ctrl-C raise where they land).
    hold = deferred_interrupts()
    hold.__enter__()
    try:
        created, staging, claim = open_out(out, args.overwrite, strips=args.maps == "strip")
    except BaseException:
        hold.__exit__(None, None, None)
        raise
    try:
        hold.__exit__(None, None, None)  # a signal held meanwhile is raised here, inside the try
        root = path if path.is_dir() else path.parent
        result = predict(model, opt, files, root, threshold, batchsize, device, staging, listed_as=out / MAPS)
        unreadable = skipped + result.unreadable
        if unreadable and path.is_dir():
            print(f"skipped {len(unreadable)} file(s) that are not readable images:", file=sys.stderr)
            for name, reason in unreadable[:SHOW_UNREADABLE]:
                print(f"  {name}: {reason}", file=sys.stderr)
            if len(unreadable) > SHOW_UNREADABLE:
                print(f"  ... and {len(unreadable) - SHOW_UNREADABLE} more", file=sys.stderr)
        if not result.rows:
            if path.is_file():
                raise UserError(f"'{path}' is not a readable image ({unreadable[0][1]})")
            raise UserError(f"none of the {len(files)} image file(s) in '{path}' could be read; see above")
        publish(out, staging, result.rows)
        if args.masks is not None:  # inspection data: how well the maps find the anomalies
            score_against_masks(model, ckpt, opt, [Path(r["path"]) for r in result.rows], root, Path(args.masks),
                                batchsize, device, out)
    finally:  # a run that fails or is interrupted leaves --out as it found it
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        close_out(out, created, claim)

    abnormal = sum(r["decision"] == "abnormal" for r in result.rows)
    print(f"scored {len(result.rows)} image(s): {abnormal} abnormal, {len(result.rows) - abnormal} normal")
    print(f"outputs: {out / PREDICTIONS}" + (f", strips in {out / MAPS}" if staging else ""))
    return 0
