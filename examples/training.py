"""What the Trainer-based examples share: argument parsing with the paper's optimiser defaults, checkpoint lookup, and
a Trainer that reports losses in bits per dimension."""

import json
import logging
import os
import sys

import torch
import transformers
from transformers import HfArgumentParser, Trainer
from transformers.trainer_utils import get_last_checkpoint

from data import bits_per_dim


logger = logging.getLogger(__name__)


def paper_optimiser_defaults() -> dict:
    """Appendix A.1: Adam with beta2 = 0.95 (0.999 gave loss spikes), no weight decay, no dropout (in the config);
    fused AdamW and bf16 where the accelerator has them, fp32 otherwise."""
    cuda = torch.cuda.is_available()
    return {
        # On a machine without an accelerator, `accelerate launch --multi_gpu --num_processes N` then runs N CPU
        # processes with DDP over gloo (`--cpu` would start a single process).
        "use_cpu": not torch.accelerator.is_available(),
        "adam_beta2": 0.95,
        "weight_decay": 0.0,
        "optim": "adamw_torch_fused" if cuda else "adamw_torch",
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "remove_unused_columns": False,  # the with_transform datasets need their raw image column
        "report_to": "none",
    }


def parse_arguments(dataclass_types, defaults: dict, argv: list[str] | None = None):
    """HfArgumentParser over `dataclass_types`, with this script's defaults; a single `.json` argument is a config file."""
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**defaults)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            argv = [item for key, value in json.load(file).items() for item in (f"--{key}", str(value))]
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args):
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    logging.getLogger("data").setLevel(level)
    transformers.utils.logging.set_verbosity(level)


def resolve_checkpoint(training_args) -> str | None:
    """`--resume_from_checkpoint PATH`, or `true`/`last` for the newest checkpoint in `--output_dir`."""
    wanted = training_args.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted.lower() in ("true", "last"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {wanted}: no checkpoint-* folder in {training_args.output_dir}")
        return last
    if not os.path.isdir(wanted):
        raise ValueError(f"--resume_from_checkpoint {wanted}: no such folder")
    return wanted


class BitsPerDimTrainer(Trainer):
    """Logs `<split>_bits_per_dim` = loss / ln 2 next to every evaluation loss (the paper reports bits per dimension)."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for key in [key for key in logs if key.endswith("_loss") and not key.startswith("train")]:
            logs[key.removesuffix("loss") + "bits_per_dim"] = bits_per_dim(logs[key])
        super().log(logs, *args, **kwargs)


def train_and_evaluate(trainer: Trainer, checkpoint: str | None, tokenizer) -> dict[str, float]:
    """Train (or resume), save model and tokenizer, record train and validation metrics; return the latter."""
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(trainer.args.output_dir)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def publish_or_card(trainer: Trainer, **card) -> None:
    """`--push_to_hub` uploads the run with its card; otherwise the card is only written into the output folder."""
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.create_model_card(**card)
