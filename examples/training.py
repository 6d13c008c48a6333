"""What the Trainer-based examples share: argument parsing with the paper's optimiser defaults (refusing an
--output_dir that is a file and missing local model folders), lookup of the last complete checkpoint, a Trainer that
stops at the first non-finite loss, and one that reports losses in bits per dimension."""

import json
import logging
import os
import re
import sys

import huggingface_hub
import torch
import transformers
from transformers import HfArgumentParser, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import IMAGE_PROCESSOR_NAME as PROCESSOR_FILE

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
    parsed = parser.parse_args_into_dataclasses(args=argv)
    for arguments in parsed:
        output_dir = getattr(arguments, "output_dir", None)
        if output_dir is not None and os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ValueError(f"--output_dir {output_dir} is a file: give a folder (it is created if missing).")
    return parsed


def check_local_folder(path: str | None, flag: str) -> None:
    """A path given for a model or processor must be a folder; a missing one is named here rather than looked up on
    the Hub (which answers "Repo id must be in the form ..." or "couldn't connect to huggingface.co"). Only an
    `owner/name`-like id that is not a local folder goes to the Hub, and only when the Hub is not switched off."""
    if path is None or os.path.isdir(path):
        return
    if os.path.exists(path):
        raise ValueError(f"{flag} {path} is a file: give the folder that holds config.json / preprocessor_config.json.")
    looks_local = path.startswith((".", "/", "~")) or os.sep != "/" and os.sep in path or path.count("/") > 1
    if looks_local or huggingface_hub.constants.HF_HUB_OFFLINE:
        offline = " (HF_HUB_OFFLINE is set, so the Hub is not tried)" if huggingface_hub.constants.HF_HUB_OFFLINE else ""
        raise ValueError(f"{flag} {path}: no such folder{offline}.")


def setup_logging(training_args):
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    logging.getLogger("data").setLevel(level)
    transformers.utils.logging.set_verbosity(level)


CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def checkpoint_problems(folder: str) -> list[str]:
    """What a checkpoint lacks to be resumed from (empty when complete). Trainer writes the weights, then the
    processor, optimizer, scheduler and RNG states, and trainer_state.json last: a run killed while saving leaves a
    folder without it (or with a truncated one)."""
    problems = []
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHTS_FILES):
        problems.append("no model weights")
    if not os.path.isfile(os.path.join(folder, PROCESSOR_FILE)):
        problems.append(f"no {PROCESSOR_FILE}")
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        problems.append(f"no {TRAINER_STATE_NAME}")
    else:
        try:
            with open(state) as file:
                json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"an unreadable {TRAINER_STATE_NAME}")
    return problems


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-* folder of `output_dir` that can be resumed from; incomplete newer ones (a run killed
    while saving) are skipped with a warning naming them."""
    steps = {}
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps[os.path.join(output_dir, name)] = int(match.group(1))
    for folder in sorted(steps, key=steps.get, reverse=True):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder
        logger.warning(
            "Skipping the incomplete checkpoint %s (%s; was the run stopped while saving it?)", folder, ", ".join(problems)
        )
    return None


def resolve_checkpoint(training_args) -> str | None:
    """`--resume_from_checkpoint PATH`, or `true`/`last` for the newest complete checkpoint in `--output_dir`."""
    wanted = training_args.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted.lower() in ("true", "last"):
        last = last_complete_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {wanted}: no complete checkpoint-* folder in {training_args.output_dir}")
        return last
    if not os.path.isdir(wanted):
        raise ValueError(f"--resume_from_checkpoint {wanted}: no such folder")
    problems = checkpoint_problems(wanted)
    if problems:
        raise ValueError(f"--resume_from_checkpoint {wanted}: an incomplete checkpoint ({', '.join(problems)})")
    return wanted


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; the checkpoints already written are intact."""


class FiniteTrainer(Trainer):
    """Stops at the first non-finite training loss, naming the step, and never saves non-finite weights.

    Trainer by default hides such losses (`logging_nan_inf_filter` logs the running mean instead) and keeps training
    and saving: a run that diverged would overwrite its last good checkpoints with NaN weights without a word.
    """

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"Non-finite training loss ({loss.item()}) at step {self.state.global_step + 1}: stopping before "
                f"the optimiser applies it. Checkpoints saved so far in {self.args.output_dir} are intact; lower the "
                "learning rate or resume from the last one."
            )
        return loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        bad = [name for name, weight in self.model.named_parameters() if not torch.isfinite(weight).all()]
        if bad:
            raise NonFiniteLossError(
                f"Non-finite weights after step {self.state.global_step} ({len(bad)} tensors, first {bad[0]}): not "
                f"saving them over the checkpoints in {self.args.output_dir}."
            )
        super().save_model(output_dir, _internal_call)


class BitsPerDimTrainer(FiniteTrainer):
    """Logs `<split>_bits_per_dim` = loss / ln 2 next to every evaluation loss (the paper reports bits per dimension)."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for key in [key for key in logs if key.endswith("_loss") and not key.startswith("train")]:
            logs[key.removesuffix("loss") + "bits_per_dim"] = bits_per_dim(logs[key])
        super().log(logs, *args, **kwargs)


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimiser step a checkpoint was saved at (0 for a fresh run)."""
    if checkpoint is None:
        return 0
    with open(os.path.join(checkpoint, TRAINER_STATE_NAME)) as file:
        return json.load(file)["global_step"]


def train_and_evaluate(
    trainer: Trainer, checkpoint: str | None, tokenizer, data_metrics: dict | None = None
) -> dict[str, float]:
    """Train (or resume), save model and tokenizer, record train (plus `data_metrics`, e.g. skipped images) and
    validation metrics; return the latter."""
    first_step = checkpoint_step(checkpoint)  # read now: checkpoint rotation may delete the folder while training
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(trainer.args.output_dir)
    # Trainer's train metrics (train_loss, runtime, throughput) cover only the steps run by this call: say which.
    # The whole run's logged losses are in trainer_state.json.
    train_metrics = {
        **train_result.metrics,
        "resumed_from_step": first_step,
        "train_steps_in_this_run": trainer.state.global_step - first_step,
        **(data_metrics or {}),
    }
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
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
