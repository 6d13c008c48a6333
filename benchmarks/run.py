"""All benchmarks in one run: the model (IGPT vs transformers' ImageGPT), tokenization and palette fitting.

    python benchmarks/run.py [--device cpu|cuda|all] [--quick] [--json results.json]

`--device all` (the default) runs the CPU model benchmark and, when a GPU is present, the S/M/L GPU benchmark.
Tokenization and palette fitting run on the CPU and read CIFAR-10 from `--data_dir`. Each benchmark prints its own
table; the JSON holds every result under the machine that produced it.
"""

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

import bench_model
import bench_palette
import bench_tokenize
from common import DEFAULT_DATA_DIR


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="shorter runs of every benchmark")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--shapes", default="S,M,L", help="GPU model shapes, comma-separated")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--compile", action="store_true", help="on CPU, also time compiled training and features")
    parser.add_argument("--jobs", default="training,features,sampling", help="model jobs, comma-separated")
    parser.add_argument(
        "--only", default="model,tokenize,palette", help="benchmarks to run, comma-separated: model, tokenize, palette"
    )
    parser.add_argument(
        "--data_dir", default=str(DEFAULT_DATA_DIR), help="folder with CIFAR-10 train.parquet"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    devices = {"all": ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"], "cpu": ["cpu"], "cuda": ["cuda"]}
    wanted = set(args.only.split(","))

    results = {"machine": machine()}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))

    if "model" in wanted:
        results["model"] = {}
        for device in devices[args.device]:
            results["model"][device] = bench_model.run(
                args.quick, device, args.shapes.split(","), compile_on_cpu=args.compile, jobs=args.jobs.split(",")
            )
            save()
    for name, bench in (("tokenize", bench_tokenize), ("palette", bench_palette)):
        if name not in wanted:
            continue
        print()
        try:
            results[name] = bench.run(quick=args.quick, data_dir=args.data_dir)
        except FileNotFoundError as error:  # the CIFAR-10 parquet is not on every machine
            results[name] = {"error": str(error)}
            print(f"{name}: skipped, {error}")
        save()


if __name__ == "__main__":
    main()
