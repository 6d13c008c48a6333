#!/usr/bin/env python
"""Train the iGPT VQ-VAE (Chen et al., 2020, section 3.2 and appendix A.2): 96x96 or 192x192 images -> 48x48 codes.

    images -> IGPTImageProcessor(do_color_quantize=False): pixel_values (B, 3, IR, IR) in [-1, 1]
        -> Trainer(IGPTVQVAEModel), Adam at 1e-4 (A.2) -> model + processor in --output_dir
        -> validation (eval_results.json): reconstruction MSE / PSNR, codebook perplexity, unused and dead codes
        -> reconstructions.png: rows of validation images, each above their reconstructions through the codes

The saved folder is what `examples/run_pretraining.py --vqvae_model` turns images into 2,304-code sequences with.

    python examples/run_vqvae.py --dataset_name ILSVRC/imagenet-1k --image_size 96 --output_dir igpt-vqvae-96 \\
        --per_device_train_batch_size 128 --max_steps 100000

With no data source it trains on random crops of the two photos bundled with scikit-learn (works offline):

    python examples/run_vqvae.py --output_dir /tmp/vqvae --image_size 32 \\
        --config_overrides latent_size=16,codebook_size=64 --max_steps 200 --per_device_train_batch_size 16

PSNR is that of the images in [0, 1]: 10 log10(2^2 / MSE) with the MSE measured in the model's [-1, 1] space.
`--do_eval` alone evaluates --model_name_or_path without training. Arguments come from the command line or from one
JSON file (`run_vqvae.py args.json`).
"""

import ast
import inspect
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from PIL import Image
from sklearn.datasets import load_sample_images
from transformers import HfArgumentParser, TrainingArguments, set_seed

from image_processing import IGPTImageProcessor, make_image_grid
from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import FiniteTrainer, IGPTVQVAEConfig, IGPTVQVAEModel
from modeling_igpt.training import check_local_folder, check_output_dir, resolve_checkpoint


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue training this IGPTVQVAEModel. Default: a new model."}
    )
    image_size: int = field(
        default=96, metadata={"help": "Input resolution of a new model: 96 (one block) or 192 (two) for 48x48 codes."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config values for a new model, e.g. 'latent_size=16,codebook_size=64'."},
    )


@dataclass
class BundledDataArguments:
    """With no data source (see DataArguments), the VQ-VAE trains on crops of scikit-learn's two photos."""

    bundled_train_crops: int = field(default=2048, metadata={"help": "Training crops of the bundled photos."})
    bundled_validation_crops: int = field(default=128, metadata={"help": "Validation crops of the bundled photos."})
    num_reconstructions: int = field(default=16, metadata={"help": "Validation images shown in reconstructions.png."})


def vqvae_defaults() -> dict:
    """A.2: Adam with a learning rate of 1e-4 (no decay schedule or weight decay is mentioned)."""
    return {
        "learning_rate": 1e-4,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "optim": "adamw_torch",  # with weight_decay 0, Adam
        "per_device_train_batch_size": 128,  # section 3.4; A.2's expected code usage assumes it
        "per_device_eval_batch_size": 64,
        "remove_unused_columns": False,  # the with_transform datasets need their raw image column
        "report_to": "none",
        "logging_steps": 50,
        "save_strategy": "no",
        "validation_split_percentage": 4.0,  # the paper holds out 4% of ImageNet's train split
        # Evaluation scores the reconstructions of the pixels (ReconstructionMetrics), so they are its labels, and
        # the metrics are summed batch by batch instead of holding every image's codes until the end.
        "label_names": ["pixel_values"],
        "batch_eval_metrics": True,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def bundled_photo_crops(num_crops: int, size: int, columns: tuple[float, float], seed: int) -> datasets.Dataset:
    """Random square crops of scikit-learn's two photos (427x640) resized to `size`, taken from a band of `columns`
    (fractions of the width) so that training and validation crops never share pixels."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # two (427, 640, 3) uint8 arrays
    crops = []
    for index in range(num_crops):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        left, right = int(columns[0] * width), int(columns[1] * width)
        largest = min(height, right - left)
        side = int(rng.integers(largest // 4, largest + 1))
        top, start = int(rng.integers(0, height - side + 1)), int(rng.integers(left, right - side + 1))
        crop = Image.fromarray(photo[top : top + side, start : start + side])
        crops.append(crop.resize((size, size), resample=Image.Resampling.BICUBIC))
    return datasets.Dataset.from_dict({"image": crops}, features=datasets.Features({"image": datasets.Image()}))


def load_splits(
    data_args: DataArguments, bundled: BundledDataArguments, image_size: int, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """(train, validation, image column): from the Hub, parquet or an imagefolder (image_processing.data), else the photos."""
    if not data_args.has_source:
        logger.info("No data source given: training on crops of the photos bundled with scikit-learn.")
        train = bundled_photo_crops(bundled.bundled_train_crops, image_size, (0.0, 0.75), seed)
        validation = bundled_photo_crops(bundled.bundled_validation_crops, image_size, (0.75, 1.0), seed + 1)
        return train, validation, "image"
    loaded = load_image_splits(data_args, seed=seed)
    return loaded.splits["train"], loaded.splits["validation"], loaded.image_column


def pixel_transform(processor: IGPTImageProcessor, column: str, flip: bool):
    """A `with_transform` function: images -> {"pixel_values": (B, 3, IR, IR)} in [-1, 1], mirrored at random if
    `flip`."""

    def transform(batch):
        pixel_values = processor(batch[column], do_color_quantize=False, return_tensors="pt")["pixel_values"]
        if flip:
            mirrored = torch.rand(len(pixel_values)) < 0.5
            pixel_values[mirrored] = pixel_values[mirrored].flip(-1)
        return {"pixel_values": pixel_values}

    return transform


def collate(examples: list[dict]) -> dict:
    return {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


def reconstruction_errors(outputs: tuple, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
    """Trainer's `preprocess_logits_for_metrics`, per batch: the model's outputs after the loss (reconstruction,
    codes, ...) -> (squared error of each image's clamped reconstruction (B,), codes (B, h*w))."""
    reconstruction, codes = outputs[0], outputs[1]
    squared_errors = (reconstruction.clamp(-1, 1) - pixel_values).double().pow(2).flatten(1).sum(1)  # (B,)
    return squared_errors, codes


class ReconstructionMetrics:
    """Trainer's `compute_metrics` for what a VQ-VAE is judged by: reconstruction MSE and PSNR, and codebook use
    (perplexity, codes used and unused on the split, codes dead by the EMA's count). With `batch_eval_metrics` it
    sums each batch (gathered across processes) and reports when `compute_result` says the split is done."""

    def __init__(self, model: IGPTVQVAEModel, tokens_per_step: int):
        self.model = model
        self.tokens_per_step = tokens_per_step  # code assignments per optimiser step: the EMA's dead-code threshold
        self.reset()

    def reset(self):
        self.squared_error, self.num_values = 0.0, 0
        self.usage = torch.zeros(self.model.config.codebook_size, dtype=torch.float64)  # (K,)

    def __call__(self, prediction, compute_result: bool = True) -> dict[str, float]:
        squared_errors, codes = (torch.as_tensor(array) for array in prediction.predictions)  # (B,), (B, h*w)
        self.squared_error += squared_errors.sum().item()
        self.num_values += torch.as_tensor(prediction.label_ids).numel()
        self.usage += torch.bincount(codes.flatten().cpu(), minlength=len(self.usage)).double()
        if not compute_result:
            return {}
        mse = self.squared_error / self.num_values
        probs = self.usage / self.usage.sum()
        codebook_size = self.model.config.codebook_size
        metrics = {
            "mse": mse,
            "psnr": 10 * math.log10(4 / mse) if mse > 0 else float("inf"),
            "perplexity": torch.exp(-(probs * torch.log(probs.clamp_min(1e-30))).sum()).item(),
            "codes_used": int((self.usage > 0).sum()),
            "unused_codes": int((self.usage == 0).sum()),  # never chosen on this split
            "dead_codes": int(self.model.quantizer.dead_code_mask(self.tokens_per_step / codebook_size).sum()),  # EMA
        }
        self.reset()
        return metrics


def save_reconstructions(model: IGPTVQVAEModel, dataset, count: int, path: str, per_row: int = 8) -> None:
    """Rows of `per_row` validation images, each followed by a row of their reconstructions through the codes."""
    pixel_values = collate([dataset[index] for index in range(min(count, len(dataset)))])["pixel_values"]
    reconstructions = model.decode(model.encode(pixel_values.to(model.device, model.dtype))).cpu()

    def to_uint8(images):  # (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8
        return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    originals, reconstructed = to_uint8(pixel_values), to_uint8(reconstructions)
    tiles = []
    for start in range(0, len(originals), per_row):
        tiles += list(originals[start : start + per_row]) + list(reconstructed[start : start + per_row])
    make_image_grid(tiles, nrow=min(per_row, len(originals))).save(path)


# ---------------------------------------------------------------------------------------------------------------------


def config_keys() -> list[str]:
    """What --config_overrides may set: IGPTVQVAEConfig's own arguments (image_size has its own flag)."""
    parameters = inspect.signature(IGPTVQVAEConfig.__init__).parameters.values()
    return [p.name for p in parameters if p.name not in ("self", "image_size") and p.kind is p.POSITIONAL_OR_KEYWORD]


def parse_config_overrides(overrides: str | None) -> dict:
    """'latent_size=16,commitment_cost=0.05' -> {'latent_size': 16, 'commitment_cost': 0.05}; a key the config does
    not have is an error (a misspelt `codebok_size=64` would otherwise train with the default 4096 codes)."""
    if not overrides:
        return {}
    parsed = {}
    for item in overrides.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            parsed[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"--config_overrides: cannot read {item!r} as key=value") from error
        if key == "image_size":
            raise ValueError("--config_overrides: set image_size with --image_size")
        if key not in config_keys():
            raise ValueError(f"--config_overrides: IGPTVQVAEConfig has no {key!r}; valid keys: {', '.join(config_keys())}")
    return parsed


def parse_arguments(argv: list[str] | None):
    """Command-line flags, or one JSON file of them, over this script's defaults."""
    parser = HfArgumentParser((ModelArguments, DataArguments, BundledDataArguments, TrainingArguments))
    parser.set_defaults(**vqvae_defaults())
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:  # parse_json_file would leave out the defaults above
            return parser.parse_dict({**vqvae_defaults(), **json.load(file)})
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, bundled, training_args = parse_arguments(argv)
    check_output_dir(training_args.output_dir)
    check_local_folder(model_args.model_name_or_path, "--model_name_or_path")
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    if model_args.model_name_or_path is not None:
        if model_args.config_overrides:
            raise ValueError("--config_overrides applies to a new model only, not to --model_name_or_path")
        model = IGPTVQVAEModel.from_pretrained(model_args.model_name_or_path)
    else:
        overrides = parse_config_overrides(model_args.config_overrides)
        config = IGPTVQVAEConfig(image_size=model_args.image_size, **overrides)
        model = IGPTVQVAEModel(config)
    image_size = model.config.image_size
    processor = IGPTImageProcessor(size={"height": image_size, "width": image_size}, do_color_quantize=False)
    logger.info(
        f"VQ-VAE {image_size}x{image_size} -> {model.config.latent_size}x{model.config.latent_size} codes from "
        f"{model.config.codebook_size}; {model.num_parameters():,} parameters in encoder + decoder"
    )

    train, validation, column = load_splits(data_args, bundled, image_size, training_args.seed)
    train = train.with_transform(pixel_transform(processor, column, flip=True))
    validation = validation.with_transform(pixel_transform(processor, column, flip=False))

    tokens_per_step = training_args.per_device_train_batch_size * training_args.world_size * model.config.latent_size**2
    trainer = FiniteTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collate,
        processing_class=processor,
        compute_metrics=ReconstructionMetrics(model, tokens_per_step),
        preprocess_logits_for_metrics=reconstruction_errors,
    )
    metrics = {}
    if training_args.do_train or not training_args.do_eval:
        result = trainer.train(resume_from_checkpoint=resolve_checkpoint(training_args))
        trainer.save_model()  # model (safetensors) + processor
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        metrics.update(result.metrics)

    eval_metrics = trainer.evaluate()
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    metrics.update(eval_metrics)
    if trainer.is_world_process_zero():
        grid_path = os.path.join(training_args.output_dir, "reconstructions.png")
        save_reconstructions(model.eval(), validation, bundled.num_reconstructions, grid_path)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tags=["igpt", "vq-vae"])
    return metrics


if __name__ == "__main__":
    main()
