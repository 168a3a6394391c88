"""User-facing errors: one clear line, a non-zero exit, no traceback unless --verbose."""
import argparse
import contextlib
import difflib
import io
import os
import re
import signal
import sys
import traceback


class UserError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


class _Console:
    """A console stream that a reader going away cannot break: `train.py | head -1` trains on and saves
    its checkpoints, `2>&-` too. After the first failed write, output goes nowhere."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except (BrokenPipeError, ValueError, OSError):  # a closed pipe, a closed or missing file
            self._stream = open(os.devnull, "w")
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._stream = open(os.devnull, "w")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _console(stream):
    """`stream` made unbreakable (None, as Python leaves a closed descriptor: a null device)."""
    if stream is None:
        stream = open(os.devnull, "w")
    if hasattr(stream, "reconfigure"):  # a file name of non-UTF-8 bytes prints escaped, never crashes
        stream.reconfigure(errors="backslashreplace")
    return stream if isinstance(stream, _Console) else _Console(stream)


def _fill_standard_descriptors() -> None:
    """A null device on each of descriptors 0-2 that the command was started without (`train.py 1>&-`):
    else the first file the run opens gets descriptor 1, and its console lines land in that file."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal), raised where the command is, as Ctrl-C raises KeyboardInterrupt:
    the same clean-up runs (a half-written --out is removed, a lock released). Training stops between steps
    instead (lib/training/stopping.py)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


STOPPING = (signal.SIGTERM, signal.SIGHUP)


def run_command_module(name: str) -> None:
    """Run module `name`'s main(argv) as a command, imported inside run_cli: a Python that lacks the
    requirements (numpy, torch) gets one line saying how to enter the environment, not a traceback."""
    import importlib
    sys.exit(run_cli(lambda argv: importlib.import_module(name).main(argv)))


def run_cli(main, argv=None):
    """Run `main(argv)`: a UserError becomes one line and exit code 2, Ctrl-C exit code 130 (SIGTERM 143,
    SIGHUP 129)."""
    top_level = argv is None  # a script's own run_cli(main), not a call from Python (tests, tools)
    if top_level:
        _fill_standard_descriptors()
        for sig in STOPPING:  # one ignored on purpose (nohup) stays ignored
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _stop)
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    if not isinstance(sys.stdout, io.StringIO):  # (tests capture output in a StringIO: left as it is)
        sys.stdout, sys.stderr = _console(sys.stdout), _console(sys.stderr)
    try:
        code = main(argv)
        if top_level:  # done: a Ctrl-C while the interpreter shuts down would turn its exit into a signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    except UserError as err:
        if verbose:
            traceback.print_exc()
        if not _another_rank():  # in a job of several processes (torchrun), rank 0 says it
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print("interrupted" + (f" ({signal.Signals(signum).name})" if signum != signal.SIGINT else ""),
              file=sys.stderr)
        sys.exit(128 + signum)
    except OSError:
        if working_directory_exists():
            raise
        if verbose:
            traceback.print_exc()
        print("error: the working directory was removed while the command ran: cd to an existing folder and run it "
              "again (a run it had begun can be continued with --resume)", file=sys.stderr)
        sys.exit(1)
    except ImportError as err:  # the environment, not the input: say which module and where to look
        if verbose:
            traceback.print_exc()
        print(cannot_load(err), file=sys.stderr)
        sys.exit(1)


def cannot_load(err: ImportError) -> str:
    """The one line for a module that cannot be imported: the environment, not the input."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    missing = isinstance(err, ModuleNotFoundError)  # not installed here; else it failed to load
    fix = ("run with the project's environment (make demo creates .venv; then . .venv/bin/activate)" if missing
           else "check that a memory limit (ulimit -v) leaves room for it, or reinstall the environment")
    return f"error: cannot load {err.name or 'a module'} ({first}): {fix}"


def require_environment() -> None:
    """For `python -m tools.X` / `experiments.X` (their packages call it): a Python without numpy or torch
    stops here with cannot_load's line, before a module's imports would end in a traceback."""
    import importlib.util
    for name in ("numpy", "torch"):
        if importlib.util.find_spec(name) is None:
            print(cannot_load(ModuleNotFoundError(f"No module named '{name}'", name=name)), file=sys.stderr)
            sys.exit(1)


def _another_rank() -> bool:
    """Whether this process is one of torchrun's others (rank 1 and up, of a job of several)."""
    env = os.environ
    return env.get("RANK", "0") != "0" and env.get("WORLD_SIZE", "1") not in ("", "1") and bool(env.get("MASTER_ADDR"))


def working_directory_exists() -> bool:
    try:
        os.getcwd()
        return True
    except FileNotFoundError:
        return False


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the problem and where to look, exit code 2.

    Flags also take dashes for underscores (`--abnormal-class`, as Lightning and anomalib spell them),
    and a flag it does not know gets the nearest ones it does ("did you mean").
    """

    def error(self, message):
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            message += self._suggestions(unknown.split())
        self.exit(2, f"error: {message} (see: {self.prog} -h)\n")

    def _suggestions(self, words) -> str:
        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        hints = []
        for word in (w.partition("=")[0] for w in words if w.startswith("-")):
            close = difflib.get_close_matches(word.replace("-", "_").replace("__", "--", 1),
                                              [k.replace("-", "_").replace("__", "--", 1) for k in known], 3, 0.6)
            matches = [next(k for k in known if k.replace("-", "_").replace("__", "--", 1) == c) for c in close]
            if matches:
                hints.append(f"{word}: did you mean {' or '.join(matches)}?")
        return f" ({'; '.join(hints)})" if hints else ""

    def _undashed(self, arg: str) -> str:
        """`--abnormal-class[=V]` as `--abnormal_class[=V]` where only the underscore spelling is a flag."""
        if not isinstance(arg, str) or not arg.startswith("--") or "-" not in arg[2:].partition("=")[0]:
            return arg
        flag, equals, value = arg.partition("=")
        underscored = "--" + flag[2:].replace("-", "_")
        if flag in self._option_string_actions or underscored not in self._option_string_actions:
            return arg
        return underscored + equals + value

    def _get_value(self, action, arg_string):
        # Python's int() and float() read digit separators ("1_0" is 10): a typo that would train another
        # run than the one asked for (--niter 1_0 trains 10 epochs) is refused as argparse refuses others.
        # The same for an option with a type of its own that reads numbers (--score_weight: a number or 'val').
        if isinstance(arg_string, str) and "_" in arg_string and action.type not in (None, str) and (
                action.type in (int, float) or re.fullmatch(r"[+-]?[\d_.]+(e[+-]?[\d_]+)?", arg_string.strip(), re.I)):
            kind = getattr(action.type, "__name__", "number")
            raise argparse.ArgumentError(action, f"invalid {kind if kind in ('int', 'float') else 'number'} value: "
                                                 f"{arg_string!r}")
        return super()._get_value(action, arg_string)

    def parse_known_args(self, args=None, namespace=None):
        args = [self._undashed(arg) for arg in (sys.argv[1:] if args is None else args)]
        parsed, rest = super().parse_known_args(args, namespace)
        # An empty output place ("--out ''", an unset variable in a script) must not fall back silently.
        for name in ("out", "outf"):
            value = getattr(parsed, name, None)
            if isinstance(value, str) and not value.strip():
                action = next(a for a in self._actions if a.dest == name)
                what = f"a file ({action.metavar})" if str(action.metavar).startswith("FILE") else "a folder"
                self.error(f"--{name} is empty: give {what}" + ("" if action.required else  # export.py's: no default
                                                                f" (or leave --{name} out for its default)"
                                                                if action.default is not None else
                                                                f" (or leave --{name} out)"))
        # Any other option given an empty value: `--resume "$RUN"` with RUN unset once trained a new run,
        # `--path ""` scored nothing, as if the flag had been left out.
        for i, arg in enumerate(args):
            flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", "")
            action = self._option_string_actions.get(flag)
            if action is None or action.nargs not in (None, "?") or action.dest in ("out", "outf"):
                continue
            given = value if equals else args[i + 1] if i + 1 < len(args) else None
            if given is not None and not given.strip():
                self.error(f"{flag} is empty (an unset variable?): give it a value, or leave {flag} out")
        return parsed, rest


@contextlib.contextmanager
def deferred_interrupts():
    """Ctrl-C and SIGTERM held back while torch loads (seconds): its C++ start-up turns an interrupt
    into an abort or swallows it. A signal that came in meanwhile is delivered as the block ends."""
    held = {signal.SIGINT, *STOPPING}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
