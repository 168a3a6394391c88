"""Collect the run folders of a sweep into the README's results table (markdown and CSV).

    python collect_results.py output                  # prints the table, writes output/results.md, .csv
    python collect_results.py output --metric auprc --out tables/cifar
"""
import argparse
import sys
from pathlib import Path

from lib.checkpoint import write_text
from lib.collect import METRICS, SELECTIONS, collect
from lib.errors import run_cli


def main(argv):
    parser = argparse.ArgumentParser(prog="collect_results.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("outf", help="folder holding the run folders (train.py's --outf)")
    parser.add_argument("--metric", default="auroc", choices=METRICS, help="test metric in the cells")
    parser.add_argument("--select", default="best", choices=tuple(SELECTIONS),
                        help="which epoch of each run: best on validation, last, or best on test (optimistic)")
    parser.add_argument("--out", default=None, help="writes OUT.md and OUT.csv (default: OUTF/results)")
    args = parser.parse_args(argv)
    table_md, table_csv = collect(args.outf, args.metric, args.select)
    prefix = args.out or str(Path(args.outf) / "results")
    write_text(f"{prefix}.md", table_md)
    write_text(f"{prefix}.csv", table_csv)
    print(table_md)
    print(f"written: {prefix}.md, {prefix}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
