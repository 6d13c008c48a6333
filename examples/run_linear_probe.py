#!/usr/bin/env python
"""Linear probes on frozen Image GPT features (Chen et al., 2020, Sections 2.4, 4.1 and 4.5).

For every layer l (or a chosen set) the features are f^l = mean_i norm(h^l_i); an L-BFGS logistic regression
(scikit-learn, as the paper does on CIFAR) is trained on them, its regularisation chosen on a validation split carved
from train, and its test accuracy reported. Then:

- the k layers centred on the best one are concatenated and probed again (Section 4.5);
- optionally, the low-data setting: n labels per class, 5 random subsets, mean +- std of test accuracy (Table 4).

BERT models are probed with masked inputs, as they were trained. Writes `probe_results.json` and `probe_accuracy.png`
(accuracy against depth, the paper's Figure 2) into --output_dir.

    python examples/run_linear_probe.py --model_name_or_path igpt-s-cifar10 --dataset_name uoft-cs/cifar10 \\
        --output_dir igpt-s-cifar10/probe --low_data_labels_per_class 4,25,400
"""

import json
import logging
import os
import warnings
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import HfArgumentParser, set_seed  # noqa: E402

from data import DataArguments, ImageTokenizer, load_image_splits, model_inputs  # noqa: E402
from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling, IGPTForMaskedImageModeling  # noqa: E402
from modeling_igpt.modeling_igpt import random_bert_mask  # noqa: E402


logger = logging.getLogger(__name__)


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
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass when extracting features."})
    seed: int = field(default=0, metadata={"help": "Seeds the splits, the BERT masks and the low-data subsets."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self):
        self.regularization_values = [float(value) for value in self.regularization.split(",")]
        if not self.regularization_values or min(self.regularization_values) <= 0:
            raise ValueError(f"--regularization must list positive C values, got {self.regularization!r}")
        self.low_data_sizes = [int(n) for n in self.low_data_labels_per_class.split(",")] if self.low_data_labels_per_class else []
        if any(n < 1 for n in self.low_data_sizes):
            raise ValueError(f"--low_data_labels_per_class must be positive, got {self.low_data_labels_per_class!r}")


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


def fit_probe(train_x, train_y, validation_x, validation_y, regularization, max_iter):
    """L-BFGS logistic regression on standardised features, C picked by validation accuracy. Returns (probe, C, acc)."""
    best = None
    for strength in regularization:
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(train_x, train_y)
        accuracy = probe.score(validation_x, validation_y)
        if best is None or accuracy > best[2]:
            best = (probe, strength, accuracy)
    return best


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
    axes.axhline(results["chance_accuracy"], color="grey", linestyle=":", label="chance")
    axes.axvline(results["best_layer"], color="tab:red", alpha=0.3, label=f"best layer ({results['best_layer']})")
    axes.set_xticks(layers)
    axes.set_xlabel("layer l (0 = embeddings)")
    axes.set_ylabel("linear probe accuracy")
    axes.set_title(f"Linear probes on f^l ({results['objective']}, {results['num_train']} training images)")
    axes.set_ylim(0, 1)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    probe_args, data_args = HfArgumentParser((ProbeArguments, DataArguments)).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(probe_args.seed)
    progress = not probe_args.disable_tqdm

    device = "cuda" if torch.cuda.is_available() else "cpu"
    objective = IGPTConfig.from_pretrained(probe_args.model_name_or_path).objective
    head_class = IGPTForMaskedImageModeling if objective == "bert" else IGPTForCausalImageModeling
    model = head_class.from_pretrained(probe_args.model_name_or_path).transformer.to(device).eval()  # the trunk
    tokenizer = ImageTokenizer.from_pretrained(probe_args.model_name_or_path)
    tokenizer.check_fits(model.config, probe_args.model_name_or_path)
    layers = parse_layers(probe_args.layers, model.config.num_hidden_layers)
    splits = load_image_splits(data_args, seed=probe_args.seed, with_labels=True, with_test=True)

    features, labels = {}, {}
    for name in ("train", "validation", "test"):
        dataset = splits.splits[name]
        logger.info("Extracting features of %d %s images at layers %s", len(dataset), name, layers)
        features[name] = extract_features(
            model, tokenizer, dataset, splits.image_column, layers, probe_args.batch_size, probe_args.seed, progress
        )  # (N, k, d)
        labels[name] = np.asarray(dataset[splits.label_column])

    def probe(columns: list[int], train_rows=slice(None)) -> dict:
        train_x = features["train"][train_rows][:, columns].reshape(len(labels["train"][train_rows]), -1)
        fitted, strength, validation_accuracy = fit_probe(
            train_x, labels["train"][train_rows],
            features["validation"][:, columns].reshape(len(labels["validation"]), -1), labels["validation"],
            probe_args.regularization_values, probe_args.max_iter,
        )
        test_x = features["test"][:, columns].reshape(len(labels["test"]), -1)
        return {"C": strength, "validation_accuracy": validation_accuracy, "test_accuracy": fitted.score(test_x, labels["test"])}

    results = {
        "model": probe_args.model_name_or_path,
        "objective": model.config.objective,
        "num_train": len(labels["train"]),
        "num_validation": len(labels["validation"]),
        "num_test": len(labels["test"]),
        "num_classes": len(splits.label_names),
        "chance_accuracy": 1 / len(splits.label_names),
        "layers": [],
    }
    for column, layer in enumerate(tqdm(layers, desc="probing layers", disable=not progress)):
        results["layers"].append({"layer": layer, **probe([column])})
        logger.info("layer %d: %s", layer, results["layers"][-1])
    best = max(range(len(layers)), key=lambda column: results["layers"][column]["validation_accuracy"])
    results["best_layer"] = layers[best]
    results["best_layer_validation_accuracy"] = results["layers"][best]["validation_accuracy"]
    results["best_layer_test_accuracy"] = results["layers"][best]["test_accuracy"]

    if probe_args.concat_layers > 1:
        low = max(0, min(best - probe_args.concat_layers // 2, len(layers) - probe_args.concat_layers))
        columns = list(range(low, min(low + probe_args.concat_layers, len(layers))))
        concat = probe(columns)
        results["concat_layers"] = [layers[column] for column in columns]
        results["concat_validation_accuracy"] = concat["validation_accuracy"]
        results["concat_test_accuracy"] = concat["test_accuracy"]

    results["low_data"] = []
    rng = np.random.default_rng(probe_args.seed)
    for per_class in probe_args.low_data_sizes:
        accuracies = [
            probe([best], low_data_subset(labels["train"], per_class, rng))["test_accuracy"]
            for _ in range(probe_args.low_data_subsets)
        ]
        results["low_data"].append(
            {"labels_per_class": per_class, "test_accuracies": accuracies, "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies))}
        )
        logger.info("%d labels per class: %.4f +- %.4f", per_class, np.mean(accuracies), np.std(accuracies))

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
