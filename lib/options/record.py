"""opt.txt, the record of a run's options, written and read back.

`options_text` writes it (every option, the default beside each changed value, as the CycleGAN code
it comes from did); `changed_options` reads back what a run changed, which is what `--config` replays
(lib/options/__init__.py). No torch: a refused --config is refused at once.
"""
from pathlib import Path

from ..errors import UserError

BEGIN, END = "------------ Options -------------", "-------------- End ----------------"
MARK = "\t[default: "
MAX_BYTES = 1 << 20


def options_text(opt, defaults: dict, runtime: dict | None = None) -> str:
    """Our opt.txt: every option, with the default beside changed values (the original's train/opt.txt has no
    marks: lib/training/original_outputs.py), then what the run chose from the machine (`runtime`: processes,
    threads, bf16, kernels, and why)."""
    lines = [BEGIN]
    for key, value in sorted(vars(opt).items()):
        default = defaults.get(key, value)
        mark = f"{MARK}{default}]" if value != default else ""
        lines.append(f"{key}: {value}{mark}")
    lines.append(END)
    if runtime:
        lines += ["------------ Runtime -------------", *(f"{k}: {v}" for k, v in runtime.items()), END]
    return "\n".join(lines) + "\n"


def changed_options(path: Path, defaults: dict[str, str] | None = None) -> dict[str, str]:
    """{option: value as written} of the options an opt.txt marks as changed from their defaults, and
    (`defaults`: {option: its default as written}) of those whose line, unmarked, differs from it: a
    value edited by hand is a value the user means to run with.

    `path` is an opt.txt or a run folder holding one; a UserError names what is wrong with it.
    """
    path = Path(path)
    file = path / "opt.txt" if path.is_dir() else path
    if file.exists() and not file.is_file():  # a named pipe would block the read forever
        raise UserError(f"--config '{file}' is not a regular file: give a run's opt.txt or its run folder")
    if file.is_file() and file.stat().st_size > MAX_BYTES:
        raise UserError(f"--config '{file}' is over {MAX_BYTES >> 10} KiB, which no opt.txt is: give a run's opt.txt")
    try:
        text = file.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is no change of meaning
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise UserError(f"--config '{path}': cannot read it ({reason}): give a run's opt.txt or its run folder")
    lines = text.splitlines()
    if BEGIN not in lines or END not in lines[lines.index(BEGIN):]:
        raise UserError(f"--config '{file}' is not an opt.txt written by train.py (no '{BEGIN.strip('- ')}' block): "
                        "give a run's opt.txt (the original's train/opt.txt records no defaults to tell changes by)")
    block = lines[lines.index(BEGIN) + 1:lines.index(END, lines.index(BEGIN))]
    for number, line in enumerate(block, lines.index(BEGIN) + 2):
        key, colon, _ = line.partition(": ")
        if not colon or not key.isidentifier():
            raise UserError(f"--config '{file}' line {number} is not 'option: value': give an opt.txt as "
                            "train.py wrote it")
    changed = marked(block)
    if not changed:  # ours always marks a few (the seed, the run's name): this is the original's train/opt.txt
        raise UserError(f"--config '{file}' marks no option as changed from its default, as the original's "
                        "train/opt.txt does not: give the run's own opt.txt, in its run folder")
    for line in block:
        key, _, value = line.partition(": ")
        if MARK not in value and key in (defaults or {}) and value != defaults[key]:
            changed[key] = value
    return changed


def marked(lines) -> dict[str, str]:
    """{option: value as written} of the lines of an opt.txt that carry a '[default: ...]' mark."""
    changed = {}
    for line in lines:
        key, colon, rest = line.partition(": ")
        if colon and MARK in rest:
            changed[key.strip()] = rest[:rest.rindex(MARK)]
    return changed


def recorded_values(path: Path) -> dict[str, str]:
    """{option: value as written} of every line of the opt.txt at `path` ({} where there is none to read)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()[:1000]
    except OSError:
        return {}
    if BEGIN not in lines or END not in lines[lines.index(BEGIN):]:
        return {}
    block = lines[lines.index(BEGIN) + 1:lines.index(END, lines.index(BEGIN))]
    return {key: value.partition(MARK)[0] for key, colon, value in (line.partition(": ") for line in block) if colon}
