"""What a command that loads a run takes from its checkpoint, and which flags it may change.

A run's stored options say what it computed. `--resume` continues that run and `--phase test`
evaluates its weights, so each takes every option from the checkpoint except those it applies
itself (how this session runs, and for `--phase test` which data it scores). A flag given on the
command line that the command would not apply, and that differs from the run's, is refused in one
line: nothing is recorded in opt.txt that was not applied.
"""
import argparse

from .. import fast
from ..errors import UserError
from ..original import fixes

# Options that define the networks: a checkpoint fixes them.
NETWORK_OPTIONS = ("model", "isize", "nc", "nz", "ngf", "ndf", "extralayers", "no_skip")
# How a session runs, never what it computes: always the command line's.
SESSION_OPTIONS = {"resume", "load_weights", "phase", "verbose", "display", "display_server",
                   "display_port", "display_id", "device", "gpu_ids", "ngpu", "workers", "overwrite",
                   "fast", "compile", "print_freq", "save_image_freq", "save_test_images", "path", "outf", "name"}
# --resume may also train longer: --niter is the checkpoint's unless given, so an interrupted run
# finishes as the run it was. (--amp: see check_same_precision.)
# --dataroot: the data moved or copied elsewhere; the checkpoint's digest of the split proves them the same.
RESUME_APPLIES = SESSION_OPTIONS | {"niter", "amp", "dataroot"}
# --phase test scores these weights on the data it is given, in the batches and precision it is given,
# and reports the metric it is asked for; the weights' score and its statistics are the checkpoint's.
TEST_APPLIES = SESSION_OPTIONS | {"dataset", "dataroot", "category", "abnormal_class", "normal_class", "val_ratio",
                                  "batchsize", "droplast", "metric", "manualseed", "amp"}
# The fixes --phase test applies itself: how the weights score (the rest shaped the weights or chose the score).
TEST_FIXES = ("eval_mode_scoring", "outputs")


def adopt(opt, saved: dict, explicit: set[str], source: str) -> None:
    """Take the checkpoint's options (`saved`) into `opt`, for --resume or --phase test.

    A flag given explicitly that the command applies keeps its value; one it would not apply must
    equal the run's (--original/--fixes by the fixes they name), else a UserError says so.
    """
    resume = bool(opt.resume) and opt.phase != "test"  # (--phase test --resume RUN: its last.pt, scored as a test)
    applied = RESUME_APPLIES if resume else TEST_APPLIES
    what = "a resumed run continues as it was trained" if resume else \
        "--phase test scores with what these weights were trained and fitted with"
    for key in sorted(explicit & saved.keys() - applied - {"original", "fixes"}):
        if getattr(opt, key) != saved[key]:
            raise UserError(f"--{key} {getattr(opt, key)}: {source} was trained with --{key} {saved[key]}, and "
                            f"{what}; drop --{key}" + ("" if key in NETWORK_OPTIONS else
                                                       ", or train a new run with it"))
    if explicit & {"original", "fixes"}:
        changed = sorted((fixes(opt) ^ fixes(argparse.Namespace(**saved))) - (set() if resume else set(TEST_FIXES)))
        if changed:
            given = "--original" if opt.original else f"--fixes {opt.fixes}"
            trained = "with" if changed[0] not in fixes(opt) else "without"
            may = "" if resume else f" (--phase test may change only {', '.join(TEST_FIXES)})"
            raise UserError(f"{given}: {source} was trained {trained} the fix '{changed[0]}', and {what}; give the "
                            f"run's own --original/--fixes{may}")
    kept = set(SESSION_OPTIONS)
    if "dataset" in explicit:  # other data: its folder and classes come from the command line too
        kept |= {"dataroot", "category", "abnormal_class", "normal_class"}
    if explicit & {"abnormal_class", "normal_class"}:  # one protocol or the other, never both
        kept |= {"abnormal_class", "normal_class"}
    for key, value in saved.items():
        if key not in explicit and key not in kept:
            setattr(opt, key, value)


def check_same_precision(opt, explicit: set[str], ckpt: dict) -> None:
    """A resumed run computes in the precision it started in: a different --amp/--no-amp is refused."""
    record = speed_record(ckpt)
    if record is None or "amp" not in explicit or opt.amp is None or not opt.fast or opt.amp == record["amp"]:
        return
    flag = f"--{'' if opt.amp else 'no-'}amp"
    raise UserError(f"{flag}: this run was trained in {'bf16' if record['amp'] else 'fp32'} and a resumed run "
                    f"continues in it; drop {flag}, or start a new run")


def speed_record(ckpt: dict | None) -> dict | None:
    """The precision and kernels a checkpoint's run chose (None: none recorded; see lib.fast)."""
    return fast.recorded_choices(ckpt, ckpt.get("path", "?")) if ckpt is not None else None
