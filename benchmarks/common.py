"""What the CIFAR-10 benchmarks share: where the data lies and their command line."""

import argparse
import json
from pathlib import Path


DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


def cli(run, description: str, quick_help: str):
    """`python benchmarks/bench_X.py [--quick] [--data_dir DIR] [--json PATH]` around `run(quick, data_dir) -> dict`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR), help="folder with CIFAR-10 train.parquet")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = run(quick=args.quick, data_dir=args.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
