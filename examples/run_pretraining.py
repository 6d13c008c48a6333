#!/usr/bin/env python
"""Generative pretraining of Image GPT from pixels (Chen et al., 2020, Sections 2.1 and 3): the autoregressive (L_AR)
or BERT (L_BERT) objective, from scratch or continued from a checkpoint.

    images -> palette colours (fitted here by k-means when none is given) or VQ-VAE codes -> token sequences
        -> Trainer(IGPTForCausalImageModeling | IGPTForMaskedImageModeling) -> model + processor in --output_dir

Defaults follow the paper (Appendix A.1): Adam beta2 = 0.95, no weight decay, a linear warm-up then a cosine decay
to 0, no dropout; bf16 and fused AdamW when the GPU has them. Validation loss is logged in bits per dimension.

    python examples/run_pretraining.py --dataset_name uoft-cs/cifar10 --output_dir igpt-s-cifar10 \\
        --per_device_train_batch_size 64 --num_train_epochs 30 --learning_rate 3e-3

It trains, then evaluates on validation (`--do_train false`: evaluate --model_name_or_path only; `--do_eval false`:
no final evaluation). Arguments come from the command line or from one JSON file (`run_pretraining.py args.json`).
Runs unchanged under `accelerate launch` (DDP / FSDP / DeepSpeed across GPUs and machines).
`--tokenized_dataset DIR` trains on token shards made once by examples/tokenize_dataset.py (`--streaming true` to
stream them); docs/scaling.md has the sharded (FSDP2 / ZeRO-3) launch configs and the commands for iGPT-L.
"""

import json
import logging
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from image_processing import IGPTImageProcessor, fit_palette
from image_processing.data import DataArguments, load_image_splits
from modeling_igpt import (
    BitsPerDimTrainer,
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTForMaskedImageModeling,
    IGPTVQVAEModel,
    ImageTokenizer,
    PretrainingCollator,
    tokenize_transform,
)
from modeling_igpt.configuration_igpt import OBJECTIVES
from modeling_igpt.token_shards import TokenShardArguments, pretraining_datasets, shards_tokenizer
from modeling_igpt.training import (
    check_local_folder,
    check_output_dir,
    paper_optimiser_defaults,
    resolve_checkpoint,
    train_evaluate_predict,
    write_model_card,
)


logger = logging.getLogger(__name__)

MODEL_CLASSES = {"autoregressive": IGPTForCausalImageModeling, "bert": IGPTForMaskedImageModeling}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining this checkpoint (its processor comes along). Default: a new model."}
    )
    objective: str | None = field(
        default=None,
        metadata={"help": "Pretraining objective (default: the checkpoint's, else autoregressive).", "choices": list(OBJECTIVES)},
    )
    model_size: str | None = field(
        default=None, metadata={"help": "A paper size for a new model: s (76M), m (455M) or l (1.4B).", "choices": ["s", "m", "l"]}
    )
    num_hidden_layers: int = field(default=24, metadata={"help": "Depth L of a new model (iGPT-S: 24)."})
    hidden_size: int = field(default=512, metadata={"help": "Width d of a new model (iGPT-S: 512)."})
    num_attention_heads: int = field(default=8, metadata={"help": "Attention heads of a new model (iGPT-S: 8)."})
    mask_probability: float = field(default=0.15, metadata={"help": "BERT masking probability (paper: 0.15)."})
    image_processor_name: str | None = field(
        default=None, metadata={"help": "A saved IGPTImageProcessor (palette) to use instead of fitting one."}
    )
    n_clusters: int = field(default=512, metadata={"help": "Palette size K when fitting one (paper: 512)."})
    image_size: int = field(default=32, metadata={"help": "Model resolution when fitting a palette (paper: 32 or 48)."})
    palette_max_pixels: int | None = field(
        default=None, metadata={"help": "Fit the palette on at most this many training pixels (default: all)."}
    )
    vqvae_model: str | None = field(
        default=None,
        metadata={"help": "A trained IGPTVQVAEModel (examples/run_vqvae.py): model its codes instead of palette colours."},
    )


def pretraining_defaults() -> dict:
    return {
        **paper_optimiser_defaults(),
        "do_train": True,
        "do_eval": True,
        "learning_rate": 3e-3,  # Table 5, iGPT-S autoregressive 32x32
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.01,  # one epoch of the paper's ~100
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 10,
        "prediction_loss_only": True,
    }


def build_tokenizer(model_args: ModelArguments, training_args: TrainingArguments, splits, checkpoint: str | None):
    """The processor (given, from the checkpoint, or a palette fitted here) plus the VQ-VAE when codes are modelled."""
    vqvae = None
    if model_args.vqvae_model is not None:
        vqvae = IGPTVQVAEModel.from_pretrained(model_args.vqvae_model)
    source = model_args.image_processor_name or checkpoint or model_args.model_name_or_path
    if source is not None:
        return ImageTokenizer.from_pretrained(source, vqvae=vqvae)
    if vqvae is not None:
        size = vqvae.config.image_size
        return ImageTokenizer(IGPTImageProcessor(size={"height": size, "width": size}, do_color_quantize=False), vqvae)

    # Fit the palette once, on the main process; the other processes read what it saved.
    with training_args.main_process_first(local=False, desc="fitting the colour palette"):
        if training_args.process_index == 0:
            logger.info("Fitting a %d-colour palette at %dx%d", model_args.n_clusters, model_args.image_size, model_args.image_size)
            processor = fit_palette(
                splits.splits["train"],
                n_clusters=model_args.n_clusters,
                size=model_args.image_size,
                max_pixels=model_args.palette_max_pixels,
                image_column=splits.image_column,
                seed=training_args.seed,
                progress=not training_args.disable_tqdm,
            )
            processor.save_pretrained(training_args.output_dir)
        else:
            processor = IGPTImageProcessor.from_pretrained(training_args.output_dir)
    return ImageTokenizer(processor)


def build_model(model_args: ModelArguments, tokenizer: ImageTokenizer):
    if model_args.model_name_or_path is not None:
        config = IGPTConfig.from_pretrained(model_args.model_name_or_path)
        objective = model_args.objective or config.objective
        if objective != config.objective:
            raise ValueError(
                f"--objective {objective} does not match the checkpoint {model_args.model_name_or_path}, "
                f"which was trained with the {config.objective} objective."
            )
        tokenizer.check_fits(config, model_args.model_name_or_path)
        return MODEL_CLASSES[objective].from_pretrained(model_args.model_name_or_path)
    objective = model_args.objective or "autoregressive"
    shape = dict(
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=tokenizer.sequence_length,
        objective=objective,
        mask_probability=model_args.mask_probability,
    )
    if model_args.model_size is not None:
        config = IGPTConfig.from_paper(model_args.model_size, **shape)
    else:
        config = IGPTConfig(
            num_hidden_layers=model_args.num_hidden_layers,
            hidden_size=model_args.hidden_size,
            num_attention_heads=model_args.num_attention_heads,
            **shape,
        )
    return MODEL_CLASSES[objective](config)


def parse_arguments(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, TokenShardArguments, TrainingArguments]:
    """Command-line flags, or one JSON file of them, over this script's defaults."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TokenShardArguments, TrainingArguments))
    parser.set_defaults(**pretraining_defaults())
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:  # parse_json_file would leave out the defaults above
            return parser.parse_dict({**pretraining_defaults(), **json.load(file)})
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, shard_args, training_args = parse_arguments(argv)
    check_output_dir(training_args.output_dir)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    for flag in ("model_name_or_path", "image_processor_name", "vqvae_model"):
        check_local_folder(getattr(model_args, flag), f"--{flag}")
    checkpoint = resolve_checkpoint(training_args)

    splits = None
    if shard_args.tokenized_dataset is None:
        splits = load_image_splits(data_args, seed=training_args.seed)
        tokenizer = build_tokenizer(model_args, training_args, splits, checkpoint)
    else:  # token shards from examples/tokenize_dataset.py, made by the model's processor (checked) or giving it one
        if data_args.has_source or model_args.vqvae_model is not None:
            raise ValueError("Give images (--dataset_name / --train_file / --train_dir, --vqvae_model) or "
                             "--tokenized_dataset (whose folder holds its tokenizer), not both.")
        source = model_args.image_processor_name or checkpoint or model_args.model_name_or_path
        tokenizer = shards_tokenizer(shard_args.tokenized_dataset, source)
    model = build_model(model_args, tokenizer)
    logger.info(
        "%s objective, %.2fM parameters, %d tokens per image, vocabulary %d",
        model.config.objective, model.num_parameters() / 1e6, tokenizer.sequence_length, tokenizer.vocab_size,
    )

    if splits is None:
        train_dataset, eval_dataset = pretraining_datasets(shard_args, training_args.seed, training_args)
    else:
        transform = tokenize_transform(tokenizer, splits.image_column)
        train_dataset = splits.splits["train"].with_transform(transform)
        eval_dataset = splits.splits["validation"].with_transform(transform)
    trainer = BitsPerDimTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PretrainingCollator(model.config.objective, tokenizer.start_token_id, model.config.mask_probability),
        processing_class=tokenizer.processor,
    )

    skipped = splits.skipped_metrics if splits is not None else {}
    metrics = train_evaluate_predict(trainer, training_args, checkpoint, tokenizer, skipped)
    if model_args.model_name_or_path is None:  # the card then says "trained from scratch", not "fine-tuned from []"
        model.config.name_or_path = training_args.output_dir
    write_model_card(
        trainer, training_args, model_args.model_name_or_path, "unconditional-image-generation",
        ["igpt", "image-gpt", f"{model.config.objective}-pretraining"],
        data_args.dataset_name or data_args.train_file or data_args.train_dir or shard_args.tokenized_dataset,
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
