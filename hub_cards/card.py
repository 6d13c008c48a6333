"""The model card: metrics read from the example runs, and the README.md rendered from templates/*.md."""

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_igpt.configuration_igpt import PAPER_SIZES
from modeling_igpt.pipeline_igpt import TASK as GENERATION_TASK

from .checkpoint import AUTO_CLASSES


TEMPLATES = Path(__file__).parent / "templates"
PROBE_PLOT = "probe_accuracy.png"  # examples/run_linear_probe.py writes it beside probe_results.json
PAPER_NAMES = {"s": "iGPT-S", "m": "iGPT-M", "l": "iGPT-L"}
CITATION = """@inproceedings{chen2020generative,
  title     = {Generative Pretraining From Pixels},
  author    = {Chen, Mark and Radford, Alec and Child, Rewon and Wu, Jeffrey and Jun, Heewoo and Luan, David and Sutskever, Ilya},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning},
  pages     = {1691--1703},
  year      = {2020},
  series    = {Proceedings of Machine Learning Research},
  volume    = {119},
}"""


# ---------------------------------------------------------------------------------------------------------------------
# Metrics from the example runs; every section optional


def read_metrics(paths: list[Path]) -> dict:
    """Merge the runs' JSON files into {bits_per_dim: {split: v}, accuracy: {split: v}, probe: {...}}.

    Reads Trainer's `eval_results.json` / `test_results.json` / `all_results.json` (`eval_bits_per_dim`, or
    `eval_loss` in nats, `eval_accuracy`, `test_accuracy`) and examples/run_linear_probe.py's `probe_results.json`
    (`layers`: [{layer, validation_accuracy, test_accuracy, ...}], `best_layer` chosen on validation). The probe entry
    is {layers: {layer: test accuracy}, best_layer, best_accuracy, plot: the run's probe_accuracy.png or None}.
    """
    metrics = {"bits_per_dim": {}, "accuracy": {}, "probe": {}}
    for path in map(Path, paths):
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): pass the metrics files the runs wrote") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of metrics, got {type(values).__name__}")
        for key, value in values.items():
            split, _, name = key.partition("_")
            if split not in ("eval", "test"):
                continue
            if name == "bits_per_dim":
                metrics["bits_per_dim"][split] = float(value)
            elif name == "loss" and f"{split}_bits_per_dim" not in values:
                metrics["bits_per_dim"].setdefault(split, float(value) / math.log(2))  # nats per token -> bits
            elif name == "accuracy":
                metrics["accuracy"][split] = float(value)
        if "layers" in values:
            metrics["probe"] = read_probe(values, path)
    return metrics


def read_probe(values: dict, path: Path) -> dict:
    """The probe entry of `read_metrics` from examples/run_linear_probe.py's probe_results.json."""
    records = values["layers"]
    if not (isinstance(records, list) and records and all(isinstance(record, dict) for record in records)):
        raise ValueError(f"{path}: 'layers' must be run_linear_probe.py's list of {{layer, test_accuracy, ...}} records")
    missing = [key for key in ("layer", "test_accuracy") if any(key not in record for record in records)]
    if missing or "best_layer" not in values:
        raise ValueError(f"{path}: a probe result needs 'layer' and 'test_accuracy' per layer and 'best_layer'")
    layers = {int(record["layer"]): float(record["test_accuracy"]) for record in records}
    best = int(values["best_layer"])
    if best not in layers:
        raise ValueError(f"{path}: best_layer {best} is not one of the probed layers {sorted(layers)}")
    plot = path.parent / PROBE_PLOT
    return {"layers": layers, "best_layer": best, "best_accuracy": layers[best], "plot": plot if plot.is_file() else None}


def read_training_state(folder: Path) -> dict:
    """Training hyperparameters recorded by Trainer (trainer_state.json), if the checkpoint has them."""
    path = folder / "trainer_state.json"
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    fields = ("train_batch_size", "num_train_epochs", "max_steps", "global_step", "best_metric")
    learning_rates = [entry["learning_rate"] for entry in state.get("log_history", []) if "learning_rate" in entry]
    hyperparameters = {field: state[field] for field in fields if state.get(field) is not None}
    if learning_rates:
        hyperparameters["peak_learning_rate"] = max(learning_rates)
    return hyperparameters


# ---------------------------------------------------------------------------------------------------------------------
# The card


def size_name(config) -> str:
    for key, preset in PAPER_SIZES.items():
        if all(getattr(config, field) == value for field, value in preset.items()):
            return PAPER_NAMES[key]
    return f"custom ({config.num_hidden_layers} layers, width {config.hidden_size})"


def eval_results(kind: str, metrics: dict, dataset: dict) -> list[EvalResult]:
    dataset_fields = dict(dataset_type=dataset["name"], dataset_name=dataset["name"], dataset_config=dataset["config"])
    results = []
    for split, value in sorted(metrics["bits_per_dim"].items()):
        results.append(EvalResult(
            task_type="unconditional-image-generation", task_name="Density estimation", dataset_split=split,
            metric_type="bits_per_dim", metric_name="Bits per dimension", metric_value=round(value, 4), **dataset_fields,
        ))
    if metrics["probe"]:
        probe = metrics["probe"]
        results.append(EvalResult(
            task_type="image-classification", task_name=f"Linear probe on f^{probe['best_layer']}",
            metric_type="accuracy", metric_name="Linear probe accuracy", metric_value=round(probe["best_accuracy"], 4),
            **dataset_fields,
        ))
    task_name = "Image classification (fine-tuned)" if kind == "classifier" else "Image classification"
    for split, value in sorted(metrics["accuracy"].items()):
        results.append(EvalResult(
            task_type="image-classification", task_name=task_name, dataset_split=split,
            metric_type="accuracy", metric_name="Accuracy", metric_value=round(value, 4), **dataset_fields,
        ))
    return results


def build_card(model, tokenizer, repo_id: str, kind: str, metrics: dict, images: dict, options) -> ModelCard:
    """The README.md of the repository. `tokenizer` is the checkpoint's ImageTokenizer (palette colours or VQ-VAE
    codes); `images` what `gallery.write_images` wrote; `options` the publish options."""
    config = model.config
    dataset = {"name": options.dataset_name, "config": options.dataset_config}
    pipeline_tag = {"autoregressive": GENERATION_TASK, "bert": "image-feature-extraction", "classifier": "image-classification"}[kind]
    tags = ["image-gpt", "igpt", "custom_code", "vision", "generative-pretraining"]
    widget = None
    if kind == "classifier":
        revision = options.revision or "main"
        widget = [
            {"src": f"https://huggingface.co/{repo_id}/resolve/{revision}/images/{name}", "example_title": Path(name).stem}
            for name in images["widget"]
        ]
    elif images["gallery"]:
        widget = [{"text": caption, "output": {"url": f"images/{name}"}} for name, caption in images["gallery"]]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=options.license,
        tags=tags,
        datasets=[options.dataset_name] if options.dataset_name else None,
        metrics=sorted({result.metric_type for result in eval_results(kind, metrics, dataset)}) or None,
        base_model=options.base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results(kind, metrics, dataset) or None,
        widget=widget,
    )
    height, width = tokenizer.grid_size  # the token grid: the image's pixels, or its VQ-VAE codes
    image_size = tokenizer.processor.size
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATES / ("classifier.md" if kind == "classifier" else "generative.md"),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        revision_hint=options.revision or "COMMIT_SHA",
        space_id=options.space_id,
        source_repo=options.source_repo,
        kind=kind,
        model_class=type(model).__name__,
        auto_class=AUTO_CLASSES[type(model).__name__].__name__,
        size_name=size_name(config),
        num_parameters=f"{model.num_parameters():,}",
        config=config,
        n_clusters=tokenizer.num_tokens,
        vqvae=tokenizer.vqvae.config if tokenizer.vqvae is not None else None,
        height=height,
        width=width,
        image_height=image_size.height,
        image_width=image_size.width,
        metrics=metrics,
        hyperparameters=read_training_state(options.checkpoint),
        labels=[config.id2label[index] for index in sorted(config.id2label)] if kind == "classifier" else [],
        images=images,
        citation=CITATION,
    )
