"""Collect the run folders of a sweep into the README's results table (markdown and CSV).

    python -m tools.collect_results output                  # prints the table, writes output/results.md, .csv
    python -m tools.collect_results output --metric auprc --out tables/cifar
"""
import argparse
import sys
from pathlib import Path

from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.runs.collect import METRICS, SELECTIONS, check_writable, collect, shown
from lib.runs.folder import enclosing_run
from lib.tune.folder import is_search_folder


def check_out(prefix: str) -> None:
    """Both tables can be written, and neither goes into a run folder (PREFIX metrics would replace the
    run's metrics.csv) or a search folder (the default OUTF/results, its results.csv): checked before
    either is written."""
    for path in (f"{prefix}.md", f"{prefix}.csv"):
        run = enclosing_run(path)
        if run is not None:
            raise UserError(f"--out {shown(path)} would be inside the run folder '{shown(run)}', whose files it "
                            "could replace: choose an --out outside every run folder")
        if is_search_folder(Path(path).parent):  # its results.csv is the search's own table
            raise UserError(f"--out {shown(path)} would be inside the search folder '{shown(Path(path).parent)}', "
                            "whose results.csv it could replace: choose an --out outside it")
        check_writable(path, "--out")


def main(argv):
    parser = OneLineParser(prog="python -m tools.collect_results", description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("outf", help="folder holding the run folders (train.py's --outf)")
    parser.add_argument("--metric", default="auroc", choices=METRICS, help="test metric in the cells")
    parser.add_argument("--select", default="best", choices=tuple(SELECTIONS),
                        help="which epoch of each run: best on validation, last, or best on test (optimistic)")
    parser.add_argument("--out", default=None, help="writes OUT.md and OUT.csv (default: OUTF/results)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty: give a path prefix for the tables, or leave --out out (OUTF/results)")
    prefix = args.out or str(Path(args.outf) / "results")
    for suffix in (".md", ".csv"):  # --out table.md names the table, not a prefix to add .md to
        prefix = prefix.removesuffix(suffix) if prefix.endswith(suffix) and len(prefix) > len(suffix) else prefix
    if args.out or Path(args.outf).is_dir():
        check_out(prefix)
    table_md, table_csv = collect(args.outf, args.metric, args.select)
    print(table_md)  # first, so the table is seen even if it cannot be written
    for path, text in ((f"{prefix}.md", table_md), (f"{prefix}.csv", table_csv)):
        try:
            write_text(path, text)
        except OSError as err:
            raise UserError(f"cannot write {shown(path)} ({err.strerror}): choose another --out") from err
    print(f"written: {shown(prefix)}.md, {shown(prefix)}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
