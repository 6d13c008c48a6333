#!/usr/bin/env python
"""The whole Image GPT chain on scikit-learn's bundled digits, in minutes on a laptop CPU, offline:

    palette (k-means, 16 greys) -> AR pretraining (4 layers, d=64) -> linear probe of every layer
        -> fine-tuning (L_clf + L_gen) -> samples and half-image completions

    python examples/demo.py --output_dir outputs/demo

Writes into --output_dir: pretrained/ (model + processor), probe/probe_accuracy.png, classifier/, samples/samples.png,
samples/completions.png, and metrics.json with the headline numbers; prints a summary at the end. Each step is one of
the example scripts, called with the arguments printed before it runs.
"""

import argparse
import json
import os
import subprocess
import sys
import time


DIGITS = ["--dataset_name", "digits"]
EXAMPLES = os.path.dirname(os.path.abspath(__file__))


def step(title: str, script: str, argv: list[str]) -> None:
    """Run examples/`script` as a user would, printing the command first."""
    print(f"\n=== {title}\n    python examples/{script} {' '.join(argv)}\n", flush=True)
    subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *argv], check=True)


def read_json(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--pretrain_epochs", type=int, default=15)
    parser.add_argument("--finetune_epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.output_dir
    started = time.time()
    seed = ["--seed", str(args.seed)]

    step(
        "1-2. Fit a 16-colour palette, then pretrain a 4-layer iGPT on 8x8 digits (autoregressive)",
        "run_pretraining.py",
        DIGITS + seed + [
            "--output_dir", f"{out}/pretrained", "--image_size", "8", "--n_clusters", "16", "--palette_max_pixels", "50000",
            "--num_hidden_layers", "4", "--hidden_size", "64", "--num_attention_heads", "4",
            "--num_train_epochs", str(args.pretrain_epochs), "--per_device_train_batch_size", "32",
            "--learning_rate", "3e-3", "--warmup_steps", "0.05", "--save_strategy", "no", "--logging_steps", "40",
        ],
    )
    probe_started = time.time()
    step(
        "3. Linear probes on every layer's features (and the low-data setting), beside raw pixels and random init",
        "run_linear_probe.py",
        DIGITS + seed + [
            "--model_name_or_path", f"{out}/pretrained", "--output_dir", f"{out}/probe",
            "--low_data_labels_per_class", "4,25", "--baselines", "raw_pixels,random_init",
        ],
    )
    probe_seconds = round(time.time() - probe_started, 1)
    step(
        "4. Fine-tune the pretrained model for classification (L_clf + L_gen, early stopping)",
        "run_image_classification.py",
        DIGITS + seed + [
            "--model_name_or_path", f"{out}/pretrained", "--output_dir", f"{out}/classifier",
            "--num_train_epochs", str(args.finetune_epochs), "--per_device_train_batch_size", "32",
            "--learning_rate", "3e-3", "--save_total_limit", "1", "--logging_steps", "40",
            "--augment", "false",  # a mirrored digit is often another digit; the paper's flips are for CIFAR photos
        ],
    )
    step(
        "5. Sample new digits and complete the bottom half of test digits",
        "run_sampling.py",
        DIGITS + seed + [
            "--model_name_or_path", f"{out}/pretrained", "--output_dir", f"{out}/samples",
            "--num_samples", "64", "--num_completions", "8", "--completions_per_image", "5", "--display_scale", "4",
        ],
    )

    pretraining = read_json(f"{out}/pretrained/eval_results.json")
    probe = read_json(f"{out}/probe/probe_results.json")
    classification = {**read_json(f"{out}/classifier/eval_results.json"), **read_json(f"{out}/classifier/test_results.json")}
    samples = read_json(f"{out}/samples/sampling.json")["files"]
    metrics = {
        "dataset": "sklearn digits (8x8, 10 classes)",
        "pretraining": {key: pretraining[key] for key in ("eval_loss", "eval_bits_per_dim")},
        "probe": {
            "chance_accuracy": probe["chance_accuracy"],
            "test_accuracy_per_layer": {entry["layer"]: entry["test_accuracy"] for entry in probe["layers"]},
            "best_layer": probe["best_layer"],
            "best_layer_test_accuracy": probe["best_layer_test_accuracy"],
            "concat_test_accuracy": probe.get("concat_test_accuracy"),
            "low_data": {entry["labels_per_class"]: {"mean": entry["mean"], "std": entry["std"]} for entry in probe["low_data"]},
            "raw_pixels_test_accuracy": probe["raw_pixels_test_accuracy"],
            "raw_pixels_low_data": {e["labels_per_class"]: {"mean": e["raw_pixels_mean"], "std": e["raw_pixels_std"]} for e in probe["low_data"]},
            "random_init_test_accuracy_per_layer": probe["random_init_test_accuracy_by_layer"],
            "random_init_best_test_accuracy": probe["random_init_best_test_accuracy"],
            "seconds": probe_seconds,
        },
        "classification": {key: classification[key] for key in ("eval_accuracy", "test_accuracy")},
        "files": {
            "probe_plot": f"{out}/probe/probe_accuracy.png",
            "samples_grid": samples["samples"],
            "completions_grid": samples["completions"],
        },
        "wall_time_seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(out, "metrics.json"), "w") as file:
        json.dump(metrics, file, indent=2)

    probe_line = ", ".join(f"{layer}: {acc:.3f}" for layer, acc in metrics["probe"]["test_accuracy_per_layer"].items())
    low_data = ", ".join(
        f"{n}/class {r['mean']:.3f}±{r['std']:.3f} (raw pixels {metrics['probe']['raw_pixels_low_data'][n]['mean']:.3f})"
        for n, r in metrics["probe"]["low_data"].items()
    )
    print(
        f"\n=== Summary ({metrics['wall_time_seconds'] / 60:.1f} min)\n"
        f"pretraining      validation {pretraining['eval_bits_per_dim']:.3f} bits/dim\n"
        f"linear probe     test accuracy by layer {{{probe_line}}}; best layer {probe['best_layer']}"
        f" -> {probe['best_layer_test_accuracy']:.3f} (chance {probe['chance_accuracy']:.2f})\n"
        f"baselines        raw pixels {probe['raw_pixels_test_accuracy']:.3f}; random-init model, best layer"
        f" {probe['random_init_best_test_accuracy']:.3f} (probe step with baselines: {probe_seconds:.0f} s)\n"
        f"low-data probe   {low_data}\n"
        f"fine-tuning      test accuracy {classification['test_accuracy']:.3f}\n"
        f"files            {out}/metrics.json, {metrics['files']['probe_plot']}, "
        f"{metrics['files']['samples_grid']}, {metrics['files']['completions_grid']}"
    )


if __name__ == "__main__":
    main()
