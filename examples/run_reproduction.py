#!/usr/bin/env python
"""The paper's central findings at a scale we can run, each number next to its baselines (Chen et al., 2020,
Sections 2.4, 4.1, 4.5, Figure 3):

    palette (k-means) -> AR pretraining with checkpoints -> probe every checkpoint (validation bits/dim vs best-layer
        probe accuracy: the paper's Figure 3) -> probe every layer of the final model (Figure 2) beside logistic
        regression on the raw pixels and the same probe on an untrained model of the same shape and palette

    python examples/run_reproduction.py --preset cpu --train_file train.parquet --test_file test.parquet --output_dir OUT
    python examples/run_reproduction.py --preset gpu --dataset_name uoft-cs/cifar10 --output_dir OUT

Every step is one of the example scripts (run_pretraining.py, run_linear_probe.py) called through its main(argv),
with the arguments printed before it runs. Writes OUT/results.json (the headline numbers, the settings and the wall
time), OUT/probe_accuracy.png (probe accuracy against depth with both baselines) and OUT/probe_vs_bits_per_dim.png
(best-layer probe accuracy against validation bits/dim over training), next to each step's own outputs.
Protocol: 10% of train is held out as validation for every choice (probe regularisation, best layer); the test split
is only reported. The results of a measured run are in docs/reproduction.md.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run_linear_probe  # noqa: E402
import run_pretraining  # noqa: E402


# Each preset: the model and palette, the pretraining budget (steps, split into `checkpoints` equal parts), and the
# probes (`checkpoint_probe_train_samples` labelled images for the per-checkpoint probes, `probe_train_samples` for the
# final one and its baselines, 0 = all of train less validation). Probes always see every validation and test image:
# `--max_eval_samples` keeps the *first* N, and a test file sorted by class (this project's CIFAR-10 parquet is) would
# then hold only a few classes. `max_eval_samples` bounds only the pretraining evaluations (bits/dim).
PRESETS = {
    # Test-sized: seconds on a CPU, on scikit-learn's bundled 8x8 digits or any small dataset.
    "tiny": {
        "image_size": 8, "n_clusters": 8, "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
        "max_steps": 48, "checkpoints": 3, "per_device_train_batch_size": 32, "learning_rate": 3e-3,
        "palette_max_pixels": 20000, "max_eval_samples": 200,
        "checkpoint_probe_train_samples": 600, "probe_train_samples": 0, "regularization": "0.1,1",
        "max_iter": 200,
        "batch_size": 128,
    },
    # At most 45 minutes on a 2-core CPU for CIFAR-10 (docs/reproduction.md: what it measured).
    "cpu": {
        "image_size": 16, "n_clusters": 64, "num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
        "max_steps": 702, "checkpoints": 3, "per_device_train_batch_size": 64, "learning_rate": 3e-3,
        "palette_max_pixels": 500000, "max_eval_samples": 2000,
        "checkpoint_probe_train_samples": 5000, "probe_train_samples": 20000, "regularization": "0.01,0.1,1",
        "max_iter": 300, "batch_size": 256,
    },
    # At most 10 minutes of one H100/H200 for pretraining at the paper's 32x32 and 512 colours (not yet measured).
    "gpu": {
        "image_size": 32, "n_clusters": 512, "num_hidden_layers": 8, "hidden_size": 512, "num_attention_heads": 8,
        "max_steps": 6000, "checkpoints": 4, "per_device_train_batch_size": 128, "learning_rate": 3e-3,
        "palette_max_pixels": 2000000, "max_eval_samples": 5000,
        "checkpoint_probe_train_samples": 10000, "probe_train_samples": 0, "regularization": "0.001,0.01,0.1,1",
        "max_iter": 1000, "batch_size": 512,
    },
}


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dataset_name", help="A Hub dataset (uoft-cs/cifar10) or 'digits' (bundled, offline).")
    parser.add_argument("--train_file", help="Local parquet file with the training images (and labels).")
    parser.add_argument("--test_file", help="Local parquet file with the test images; only reported on.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--disable_tqdm", action="store_true")
    parser.add_argument(
        "--low_data_labels_per_class", metavar="N,N,..",
        help="Also probe the final model's best layer with this many labels per class (paper: 4,25,400; 5 random "
        "subsets each), beside raw pixels on the same subsets.",
    )  # fmt: skip
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help=f"Override preset values, e.g. --set max_steps=200 learning_rate=1e-3 (keys: {sorted(PRESETS['cpu'])}).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (args.dataset_name is None) == (args.train_file is None):
        parser.error("give exactly one data source: --dataset_name or --train_file (with --test_file)")
    if args.dataset_name is not None and args.test_file is not None:
        parser.error("--test_file goes with --train_file, not --dataset_name")
    settings = dict(PRESETS[args.preset])
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in settings or not value:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(settings)}")
        settings[key] = type(settings[key])(value)
    if settings["checkpoints"] < 3:
        raise ValueError(f"checkpoints={settings['checkpoints']}: Figure 3 needs at least 3 points in training")
    if settings["max_steps"] % settings["checkpoints"]:
        raise ValueError(f"max_steps={settings['max_steps']} must be a multiple of checkpoints={settings['checkpoints']}")
    return args, settings


def step(title: str, script, argv: list[str]) -> dict:
    print(f"\n=== {title}\n    python examples/{script.__name__}.py {' '.join(argv)}\n", flush=True)
    started = time.time()
    result = script.main(argv)
    seconds = round(time.time() - started, 1)
    print(f"\n=== ({title.split('.')[0]}. took {seconds:.0f} s)", flush=True)
    return result, seconds


def validation_bits_per_dim(trainer_state: str) -> dict[int, float]:
    """{step: validation bits/dim} from the evaluations a Trainer logged."""
    with open(trainer_state) as file:
        history = json.load(file)["log_history"]
    return {entry["step"]: entry["eval_bits_per_dim"] for entry in history if "eval_bits_per_dim" in entry}


def by_layer(entries: list[dict], key: str) -> dict[str, float]:
    return {str(entry["layer"]): entry[key] for entry in entries}


def plot_figure3(checkpoints: list[dict], path: str):
    """The paper's Figure 3 at our scale: best-layer probe accuracy against validation bits/dim over training."""
    figure, axes = plt.subplots(figsize=(5, 4))
    bits = [point["validation_bits_per_dim"] for point in checkpoints]
    accuracy = [point["best_layer_probe_accuracy"] for point in checkpoints]
    axes.plot(bits, accuracy, "o-")
    for point in checkpoints:
        axes.annotate(f"step {point['step']}", (point["validation_bits_per_dim"], point["best_layer_probe_accuracy"]),
                      textcoords="offset points", xytext=(4, 4), fontsize="small")  # fmt: skip
    axes.invert_xaxis()  # training moves right: lower bits/dim
    axes.set_xlabel("validation bits/dim")
    axes.set_ylabel("best-layer linear probe accuracy (test)")
    axes.set_title("Better generative models learn better features")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args, settings = parse_args(argv)
    started = time.time()
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    data = ["--dataset_name", args.dataset_name] if args.dataset_name else ["--train_file", args.train_file]
    if args.test_file:
        data += ["--test_file", args.test_file]
    common = data + ["--seed", str(args.seed), "--disable_tqdm", str(args.disable_tqdm).lower()]
    probe_settings = [
        "--regularization", settings["regularization"], "--max_iter", str(settings["max_iter"]),
        "--batch_size", str(settings["batch_size"]), "--concat_layers", "0",
    ]  # fmt: skip
    save_steps = settings["max_steps"] // settings["checkpoints"]
    seconds = {}

    pretrained = f"{out}/pretrained"
    pretraining, seconds["palette_and_pretraining"] = step(
        f"1-2. Fit a {settings['n_clusters']}-colour palette at {settings['image_size']}x{settings['image_size']}, then "
        f"pretrain a {settings['num_hidden_layers']}-layer d={settings['hidden_size']} iGPT (autoregressive)",
        run_pretraining,
        common + [
            "--output_dir", pretrained, "--image_size", str(settings["image_size"]),
            "--n_clusters", str(settings["n_clusters"]), "--palette_max_pixels", str(settings["palette_max_pixels"]),
            "--num_hidden_layers", str(settings["num_hidden_layers"]), "--hidden_size", str(settings["hidden_size"]),
            "--num_attention_heads", str(settings["num_attention_heads"]),
            "--max_steps", str(settings["max_steps"]), "--per_device_train_batch_size", str(settings["per_device_train_batch_size"]),
            "--per_device_eval_batch_size", str(settings["batch_size"]),
            "--learning_rate", str(settings["learning_rate"]), "--max_eval_samples", str(settings["max_eval_samples"]),
            "--eval_strategy", "steps", "--eval_steps", str(save_steps),
            "--save_strategy", "steps", "--save_steps", str(save_steps), "--save_total_limit", str(settings["checkpoints"]),
            "--logging_steps", str(max(1, save_steps // 5)), "--dataloader_num_workers", str(args.dataloader_num_workers),
        ],
    )  # fmt: skip
    bits = validation_bits_per_dim(f"{pretrained}/trainer_state.json")

    checkpoints = []
    for index in range(1, settings["checkpoints"] + 1):
        at = index * save_steps
        folder = f"{pretrained}/checkpoint-{at}"
        probe, probe_seconds = step(
            f"3. Probe every layer of the checkpoint at step {at} ({settings['checkpoint_probe_train_samples']} labelled images)",
            run_linear_probe,
            common + probe_settings + [
                "--model_name_or_path", folder, "--output_dir", f"{out}/checkpoint_probes/step-{at}",
                "--max_train_samples", str(settings["checkpoint_probe_train_samples"]),
            ],
        )  # fmt: skip
        checkpoints.append({
            "step": at,
            "validation_bits_per_dim": bits[at],
            "best_layer": probe["best_layer"],
            "best_layer_probe_accuracy": probe["best_layer_test_accuracy"],
            "best_layer_probe_validation_accuracy": probe["best_layer_validation_accuracy"],
            "num_probe_images": {"train": probe["num_train"], "validation": probe["num_validation"], "test": probe["num_test"]},
            "probe_test_accuracy_by_layer": by_layer(probe["layers"], "test_accuracy"),
            "seconds": probe_seconds,
        })  # fmt: skip
    seconds["checkpoint_probes"] = round(sum(point["seconds"] for point in checkpoints), 1)

    final, seconds["final_probe_with_baselines"] = step(
        "4. Probe every layer of the final model beside raw pixels and an untrained model of the same shape",
        run_linear_probe,
        common + probe_settings + [
            "--model_name_or_path", pretrained, "--output_dir", f"{out}/probe", "--baselines", "raw_pixels,random_init",
        ]
        + (["--max_train_samples", str(settings["probe_train_samples"])] if settings["probe_train_samples"] else [])
        + (["--low_data_labels_per_class", args.low_data_labels_per_class] if args.low_data_labels_per_class else []),
    )  # fmt: skip
    shutil.copy(f"{out}/probe/probe_accuracy.png", f"{out}/probe_accuracy.png")
    plot_figure3(checkpoints, f"{out}/probe_vs_bits_per_dim.png")

    results = {
        "raw_pixels_test_accuracy": final["raw_pixels_test_accuracy"],
        "raw_pixels_validation_accuracy": final["raw_pixels"]["validation_accuracy"],
        "random_init_test_accuracy_by_layer": final["random_init_test_accuracy_by_layer"],
        "random_init_validation_accuracy_by_layer": by_layer(final["random_init_layers"], "validation_accuracy"),
        "random_init_best_layer": final["random_init_best_layer"],
        "random_init_best_test_accuracy": final["random_init_best_test_accuracy"],
        "probe_test_accuracy_by_layer": by_layer(final["layers"], "test_accuracy"),
        "probe_validation_accuracy_by_layer": by_layer(final["layers"], "validation_accuracy"),
        "best_layer": final["best_layer"],
        "best_layer_test_accuracy": final["best_layer_test_accuracy"],
        "chance_accuracy": final["chance_accuracy"],
        "final_validation_bits_per_dim": pretraining["eval_bits_per_dim"],
        "checkpoints": checkpoints,
        "low_data": final["low_data"],
        "num_images": {"train": final["num_train"], "validation": final["num_validation"], "test": final["num_test"]},
        "settings": {
            "preset": args.preset, **settings, "seed": args.seed, "objective": "autoregressive",
            "data": args.dataset_name or {"train_file": args.train_file, "test_file": args.test_file},
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "accelerator": torch.cuda.get_device_name() if torch.cuda.is_available() else None},  # fmt: skip
        "seconds": seconds,
        "wall_time_seconds": round(time.time() - started, 1),
    }
    with open(f"{out}/results.json", "w") as file:
        json.dump(results, file, indent=2)

    layers = ", ".join(f"{layer}: {acc:.3f}" for layer, acc in results["probe_test_accuracy_by_layer"].items())
    random = ", ".join(f"{layer}: {acc:.3f}" for layer, acc in results["random_init_test_accuracy_by_layer"].items())
    curve = ", ".join(f"step {p['step']}: {p['validation_bits_per_dim']:.3f} b/d -> {p['best_layer_probe_accuracy']:.3f}" for p in checkpoints)
    print(
        f"\n=== Summary ({results['wall_time_seconds'] / 60:.1f} min)\n"
        f"probe by layer   {{{layers}}}; best layer {results['best_layer']} (on validation) -> "
        f"{results['best_layer_test_accuracy']:.3f} test\n"
        f"random init      {{{random}}}; best -> {results['random_init_best_test_accuracy']:.3f}\n"
        f"raw pixels       {results['raw_pixels_test_accuracy']:.3f}   (chance {results['chance_accuracy']:.2f})\n"
        f"over training    {curve}\n"
        f"files            {out}/results.json, {out}/probe_accuracy.png, {out}/probe_vs_bits_per_dim.png"
    )
    return results


if __name__ == "__main__":
    main()
