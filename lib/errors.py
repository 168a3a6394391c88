"""User-facing errors: one clear line, a non-zero exit, no traceback unless --verbose."""
import argparse
import os
import sys
import traceback


class UserError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


def run_cli(main, argv=None):
    """Run `main(argv)`: a UserError becomes one line and exit code 2, Ctrl-C exit code 130."""
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    for stream in (sys.stdout, sys.stderr):  # a file name of non-UTF-8 bytes prints escaped, never crashes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        return main(argv)
    except UserError as err:
        if verbose:
            traceback.print_exc()
        if os.environ.get("RANK", "0") == "0":  # in a job of several processes (torchrun), rank 0 says it
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the problem and where to look, exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} -h)\n")
