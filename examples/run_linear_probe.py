#!/usr/bin/env python
"""Linear probes on frozen Image GPT features (Chen et al., 2020, Sections 2.4, 4.1 and 4.5).

For every layer l (or a chosen set) the features are f^l = mean_i norm(h^l_i); an L-BFGS logistic regression
(scikit-learn, as the paper does on CIFAR) is trained on them, its regularisation chosen on a validation split carved
from train, and its test accuracy reported. Then:

- the k layers centred on the best one are concatenated and probed again (Section 4.5);
- optionally, the low-data setting: n labels per class, 5 random subsets, mean +- std of test accuracy (Table 4);
- optionally (--baselines raw_pixels,random_init), the numbers every probe must be read against: the same logistic
  regression on the raw pixels of the same resized images, and the same probe on an untrained model of the same
  configuration and palette (each with the same label subsets in the low-data setting).

BERT models are probed with masked inputs, as they were trained; their test images are also scored with the paper's
5-mask ensemble (Section 4.6: the modal prediction over independent masks, ties broken at random). Writes
`probe_results.json` and `probe_accuracy.png` (accuracy against depth, the paper's Figure 2, with the baselines drawn)
into --output_dir.

    python examples/run_linear_probe.py --model_name_or_path igpt-s-cifar10 --dataset_name uoft-cs/cifar10 \\
        --output_dir igpt-s-cifar10/probe --low_data_labels_per_class 4,25,400
"""

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from joblib import Parallel, cpu_count, delayed  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import HfArgumentParser, set_seed  # noqa: E402

from image_processing.data import DataArguments, load_image_splits  # noqa: E402
from modeling_igpt import (  # noqa: E402
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTForMaskedImageModeling,
    ImageTokenizer,
    model_inputs,
)
from modeling_igpt.modeling_igpt import random_bert_mask  # noqa: E402
from modeling_igpt.training import check_local_folder  # noqa: E402


logger = logging.getLogger(__name__)

BASELINES = ("raw_pixels", "random_init")
SPLITS = ("train", "validation", "test")


@dataclass
class ProbeArguments:
    model_name_or_path: str = field(metadata={"help": "A pretrained Image GPT checkpoint (any head) with its processor."})
    output_dir: str = field(metadata={"help": "Where probe_results.json and probe_accuracy.png go."})
    layers: str = field(default="all", metadata={"help": "Hidden states to probe: 'all' (0..L) or e.g. '4,8,12'."})
    concat_layers: int = field(
        default=3, metadata={"help": "Probe the concatenation of this many layers centred on the best (paper: 11); 0 skips."}
    )
    regularization: str = field(
        default="0.001,0.01,0.1,1,10", metadata={"help": "Inverse regularisation strengths C to try on validation."}
    )
    max_iter: int = field(default=1000, metadata={"help": "L-BFGS iterations per fit."})
    low_data_labels_per_class: str | None = field(
        default=None, metadata={"help": "Low-data probes with these many labels per class, e.g. '4,25,400'."}
    )
    low_data_subsets: int = field(default=5, metadata={"help": "Random subsets per low-data size (paper: 5)."})
    num_masks: int = field(
        default=5, metadata={"help": "BERT models: masks per test image in the modal-prediction ensemble (paper: 5); 1 skips it."}
    )
    baselines: str | None = field(
        default=None,
        metadata={
            "help": f"Baselines probed the same way, comma-separated from {BASELINES}: 'raw_pixels' (logistic regression "
            "on the processor's resized pixels) and 'random_init' (an untrained model of the same configuration)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass when extracting features."})
    seed: int = field(default=0, metadata={"help": "Seeds the splits, the BERT masks and the low-data subsets."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self):
        self.regularization_values = [float(value) for value in self.regularization.split(",")]
        if not self.regularization_values or min(self.regularization_values) <= 0:
            raise ValueError(f"--regularization must list positive C values, got {self.regularization!r}")
        self.low_data_sizes = [int(n) for n in self.low_data_labels_per_class.split(",")] if self.low_data_labels_per_class else []
        if self.num_masks < 1:
            raise ValueError(f"--num_masks must be at least 1, got {self.num_masks}")
        if any(n < 1 for n in self.low_data_sizes):
            raise ValueError(f"--low_data_labels_per_class must be positive, got {self.low_data_labels_per_class!r}")
        self.baseline_names = [name.strip() for name in self.baselines.split(",")] if self.baselines else []
        unknown = [name for name in self.baseline_names if name not in BASELINES]
        if unknown:
            raise ValueError(f"--baselines: unknown baseline(s) {unknown}; choose from {list(BASELINES)}")


def parse_layers(spec: str, depth: int) -> list[int]:
    if spec == "all":
        return list(range(depth + 1))
    layers = [int(layer) for layer in spec.split(",")]
    for layer in layers:
        if not 0 <= layer <= depth:
            raise ValueError(f"--layers: layer {layer} does not exist; this model has hidden states 0..{depth}")
    return sorted(set(layers))


@torch.no_grad()
def extract_features(model, tokenizer, dataset, image_column, layers, batch_size, seed, progress) -> np.ndarray:
    """f^l for every image and layer: (N, k, d) float32. BERT models see a random mask M, as in training."""
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="features", disable=not progress):
        images = dataset[start : start + batch_size][image_column]
        input_ids = model_inputs(tokenizer(images), model.config.objective, tokenizer.start_token_id)  # (B, N)
        mask = None
        if model.config.objective == "bert":
            mask = random_bert_mask(input_ids.shape, model.config.mask_probability, "cpu", generator).to(model.device)
        features = model.get_probe_features(input_ids.to(model.device), layers=layers, concat=False, bool_masked_pos=mask)
        chunks.append(features.float().cpu().numpy())  # (B, k, d)
    return np.concatenate(chunks)


def extract_pixels(tokenizer, dataset, image_column, batch_size) -> np.ndarray:
    """The raw-pixel baseline's inputs: the processor's resized RGB pixels, unquantized, flattened: (N, 3*H*W)."""
    chunks = []
    for start in range(0, len(dataset), batch_size):
        images = dataset[start : start + batch_size][image_column]
        pixel_values = tokenizer.processor(images, do_color_quantize=False, return_tensors="np")["pixel_values"]
        chunks.append(pixel_values.reshape(len(pixel_values), -1).astype(np.float32))  # (B, 3*H*W)
    return np.concatenate(chunks)


def fit_probe(train_x, train_y, validation_x, validation_y, regularization, max_iter):
    """L-BFGS logistic regression on standardised features, C picked by validation accuracy. Returns (probe, C, acc).

    The fits for the C values run side by side, each on one thread: scikit-learn's OpenMP loss and BLAS on two threads
    made one fit ~3x slower than on one thread for these small problems (20,000 x 128 features on the 2-core machine).
    """

    def fit(strength):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=max_iter)).fit(train_x, train_y)
        return probe, strength, probe.score(validation_x, validation_y)

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = Parallel(n_jobs=min(len(regularization), cpu_count()), backend="threading")(  # CPUs this process may use
            delayed(fit)(strength) for strength in regularization
        )
    return max(fitted, key=lambda entry: entry[2])  # the first C of best validation accuracy


def modal_class(votes: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
    """The most frequent of `classes` in each column of `votes` (M, N), ties broken at random (paper Section 4.6): (N,)."""
    counts = (votes[..., None] == classes).sum(axis=0)  # (N, C)
    jitter = np.random.default_rng(seed).random(counts.shape) / 2  # < 1: reorders tied counts only
    return classes[np.argmax(counts + jitter, axis=1)]


def low_data_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(labels)
    for label in classes:
        if (labels == label).sum() < per_class:
            raise ValueError(f"Class {label} has fewer than {per_class} training images for the low-data probe.")
    return np.concatenate([rng.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in classes])


def plot_accuracy(results: dict, path: str):
    layers = [entry["layer"] for entry in results["layers"]]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(layers, [entry["test_accuracy"] for entry in results["layers"]], "o-", label="test")
    axes.plot(layers, [entry["validation_accuracy"] for entry in results["layers"]], "s--", alpha=0.6, label="validation")
    if "random_init_layers" in results:
        random_init = [entry["test_accuracy"] for entry in results["random_init_layers"]]
        axes.plot(layers, random_init, "^-", color="tab:purple", alpha=0.8, label="random init (test)")
    if "raw_pixels_test_accuracy" in results:
        axes.axhline(results["raw_pixels_test_accuracy"], color="tab:green", linestyle="-.", label="raw pixels (test)")
    axes.axhline(results["chance_accuracy"], color="grey", linestyle=":", label="chance")
    axes.axvline(results["best_layer"], color="tab:red", alpha=0.3, label=f"best layer ({results['best_layer']})")
    axes.set_xticks(layers)
    axes.set_xlabel("layer l (0 = embeddings)")
    axes.set_ylabel("linear probe accuracy")
    axes.set_title(f"Linear probes on f^l ({results['objective']}, {results['num_train']} training images)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    probe_args, data_args = HfArgumentParser((ProbeArguments, DataArguments)).parse_args_into_dataclasses(args=argv)
    check_local_folder(probe_args.model_name_or_path, "--model_name_or_path")
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    set_seed(probe_args.seed)
    progress = not probe_args.disable_tqdm

    device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    objective = IGPTConfig.from_pretrained(probe_args.model_name_or_path).objective
    head_class = IGPTForMaskedImageModeling if objective == "bert" else IGPTForCausalImageModeling
    model = head_class.from_pretrained(probe_args.model_name_or_path).transformer.to(device).eval()  # the trunk
    tokenizer = ImageTokenizer.from_pretrained(probe_args.model_name_or_path)
    tokenizer.check_fits(model.config, probe_args.model_name_or_path)
    layers = parse_layers(probe_args.layers, model.config.num_hidden_layers)
    splits = load_image_splits(data_args, seed=probe_args.seed, with_labels=True, with_test=True)

    started = time.perf_counter()
    labels = {name: np.asarray(splits.splits[name][splits.label_column]) for name in SPLITS}

    def extract_all(trunk) -> dict[str, np.ndarray]:
        """f^l of every split's images under `trunk`: {split: (N, k, d)}."""
        features = {}
        for name in SPLITS:
            dataset = splits.splits[name]
            logger.info("Extracting features of %d %s images at layers %s", len(dataset), name, layers)
            features[name] = extract_features(
                trunk, tokenizer, dataset, splits.image_column, layers, probe_args.batch_size, probe_args.seed, progress
            )  # (N, k, d)
        return features

    features = extract_all(model)
    # BERT: the test images again under further independent masks, for the 5-mask ensemble (mask 0 is the one above).
    test_masks = []
    if model.config.objective == "bert" and probe_args.num_masks > 1:
        logger.info("Extracting features of the test images under %d more masks", probe_args.num_masks - 1)
        test_masks = [features["test"]] + [
            extract_features(
                model, tokenizer, splits.splits["test"], splits.image_column, layers, probe_args.batch_size,
                probe_args.seed + index, progress,
            )
            for index in range(1, probe_args.num_masks)
        ]  # fmt: skip

    def probe(columns: list[int], train_rows=slice(None), inputs: dict | None = None) -> dict:
        """Fit on train (or its `train_rows`), choose C on validation, score test; `inputs` defaults to the features."""
        inputs = features if inputs is None else inputs

        def design(name: str, rows=slice(None)) -> np.ndarray:
            return inputs[name][rows][:, columns].reshape(len(labels[name][rows]), -1)  # (n, len(columns) * d)

        fitted, strength, validation_accuracy = fit_probe(
            design("train", train_rows), labels["train"][train_rows], design("validation"), labels["validation"],
            probe_args.regularization_values, probe_args.max_iter,
        )
        result = {"C": strength, "validation_accuracy": validation_accuracy, "test_accuracy": fitted.score(design("test"), labels["test"])}
        if test_masks and inputs is features:
            votes = np.stack([fitted.predict(masked[:, columns].reshape(len(masked), -1)) for masked in test_masks])  # (M, N)
            predictions = modal_class(votes, fitted.classes_, probe_args.seed)
            result["test_accuracy_mask_ensemble"] = float(np.mean(predictions == labels["test"]))
        return result

    def probe_every_layer(inputs: dict, what: str) -> tuple[list[dict], int]:
        """One probe per layer; returns the entries and the column of the best layer on validation."""
        entries = []
        for column, layer in enumerate(tqdm(layers, desc=f"probing layers ({what})", disable=not progress)):
            entries.append({"layer": layer, **probe([column], inputs=inputs)})
            logger.info("%s layer %d: %s", what, layer, entries[-1])
        return entries, max(range(len(layers)), key=lambda column: entries[column]["validation_accuracy"])

    results = {
        "model": probe_args.model_name_or_path,
        "objective": model.config.objective,
        "num_train": len(labels["train"]),
        "num_validation": len(labels["validation"]),
        "num_test": len(labels["test"]),
        "num_classes": len(splits.label_names),
        "chance_accuracy": 1 / len(splits.label_names),
    }
    results["layers"], best = probe_every_layer(features, "pretrained")
    results["best_layer"] = layers[best]
    results["best_layer_validation_accuracy"] = results["layers"][best]["validation_accuracy"]
    results["best_layer_test_accuracy"] = results["layers"][best]["test_accuracy"]
    if test_masks:
        results["num_masks"] = probe_args.num_masks
        results["best_layer_test_accuracy_mask_ensemble"] = results["layers"][best]["test_accuracy_mask_ensemble"]
    results["seconds"] = {"probe": round(time.perf_counter() - started, 1)}

    if probe_args.concat_layers > 1:
        low = max(0, min(best - probe_args.concat_layers // 2, len(layers) - probe_args.concat_layers))
        columns = list(range(low, min(low + probe_args.concat_layers, len(layers))))
        concat = probe(columns)
        results["concat_layers"] = [layers[column] for column in columns]
        results["concat_validation_accuracy"] = concat["validation_accuracy"]
        results["concat_test_accuracy"] = concat["test_accuracy"]

    pixels = None
    if "raw_pixels" in probe_args.baseline_names:
        baseline_started = time.perf_counter()
        pixels = {  # (N, 1, 3*H*W): one "layer" of raw pixels
            name: extract_pixels(tokenizer, splits.splits[name], splits.image_column, probe_args.batch_size)[:, None]
            for name in SPLITS
        }
        raw = probe([0], inputs=pixels)
        results["raw_pixels"] = {"num_features": pixels["train"].shape[-1], **raw}
        results["raw_pixels_test_accuracy"] = raw["test_accuracy"]
        results["seconds"]["raw_pixels"] = round(time.perf_counter() - baseline_started, 1)
        logger.info("raw pixels: %s", results["raw_pixels"])
    if "random_init" in probe_args.baseline_names:
        baseline_started = time.perf_counter()
        set_seed(probe_args.seed)  # the same seed policy as a new model in run_pretraining.py
        untrained = type(model)(model.config).to(device).eval()  # same configuration, shape and palette; no training
        entries, random_best = probe_every_layer(extract_all(untrained), "random init")
        results["random_init_layers"] = entries
        results["random_init_test_accuracy_by_layer"] = {str(entry["layer"]): entry["test_accuracy"] for entry in entries}
        results["random_init_best_layer"] = layers[random_best]
        results["random_init_best_test_accuracy"] = entries[random_best]["test_accuracy"]
        results["seconds"]["random_init"] = round(time.perf_counter() - baseline_started, 1)
        del untrained

    results["low_data"] = []
    low_data_started = time.perf_counter()
    rng = np.random.default_rng(probe_args.seed)
    for per_class in probe_args.low_data_sizes:
        subsets = [low_data_subset(labels["train"], per_class, rng) for _ in range(probe_args.low_data_subsets)]
        accuracies = [probe([best], rows)["test_accuracy"] for rows in subsets]
        entry = {"labels_per_class": per_class, "test_accuracies": accuracies, "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies))}
        if pixels is not None:  # the same label subsets
            raw_accuracies = [probe([0], rows, inputs=pixels)["test_accuracy"] for rows in subsets]
            entry["raw_pixels_test_accuracies"] = raw_accuracies
            entry["raw_pixels_mean"], entry["raw_pixels_std"] = float(np.mean(raw_accuracies)), float(np.std(raw_accuracies))
        results["low_data"].append(entry)
        logger.info("%d labels per class: %.4f +- %.4f", per_class, np.mean(accuracies), np.std(accuracies))
    if probe_args.low_data_sizes:
        results["seconds"]["low_data"] = round(time.perf_counter() - low_data_started, 1)
    results["wall_time_seconds"] = round(time.perf_counter() - started, 1)

    os.makedirs(probe_args.output_dir, exist_ok=True)
    with open(os.path.join(probe_args.output_dir, "probe_results.json"), "w") as file:
        json.dump(results, file, indent=2)
    plot_accuracy(results, os.path.join(probe_args.output_dir, "probe_accuracy.png"))
    logger.info(
        "best layer %d: test accuracy %.4f (chance %.3f)",
        results["best_layer"], results["best_layer_test_accuracy"], results["chance_accuracy"],
    )
    return results


if __name__ == "__main__":
    main()
