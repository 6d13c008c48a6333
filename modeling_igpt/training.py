"""What Image GPT training runs add to transformers' Trainer: the paper's optimiser settings, losses in bits per
dimension, a stop at the first non-finite loss (never saving non-finite weights), and resuming from the last
checkpoint that was saved completely, full or sharded by FSDP. Also the checks the example scripts run on paths
before loading anything.
"""

import json
import logging
import math
import os
import pickle
import re

import huggingface_hub
import torch
from accelerate.utils.constants import FSDP_MODEL_NAME, OPTIMIZER_NAME
from torch.distributed.checkpoint import FileSystemReader
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import IMAGE_PROCESSOR_NAME as PROCESSOR_FILE


logger = logging.getLogger(__name__)


def bits_per_dim(loss_nats: float) -> float:
    """Mean negative log-likelihood per token, in bits: the paper's unit."""
    return loss_nats / math.log(2)


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


def check_output_dir(path: str) -> None:
    """--output_dir must be a folder (it is created if missing), not a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output_dir {path} is a file: give a folder (it is created if missing).")


CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# What Trainer writes with FSDP's SHARDED_STATE_DICT (accelerate's save_fsdp_model / save_fsdp_optimizer, model 0):
# one torch.distributed.checkpoint folder each, every process writing its own `__<rank>_0.distcp` shard.
SHARDED_WEIGHTS_FOLDER = f"{FSDP_MODEL_NAME}_0"
SHARDED_OPTIMIZER_FOLDER = f"{OPTIMIZER_NAME}_0"


def is_sharded_checkpoint(folder: str) -> bool:
    """Whether `folder` holds FSDP-sharded weights (a Trainer checkpoint of a SHARDED_STATE_DICT run)."""
    return os.path.isdir(os.path.join(folder, SHARDED_WEIGHTS_FOLDER))


def sharded_state_problems(folder: str) -> list[str]:
    """What a torch.distributed.checkpoint folder lacks: its `.metadata` (written last, once every process has
    written its shard) and every shard file, whole, that the metadata names. A shard goes missing when the
    processes of a multi-machine run saved to disks that are not shared."""
    name = os.path.basename(folder)
    try:
        metadata = FileSystemReader(folder).read_metadata()
    except FileNotFoundError:
        return [f"no {name}/.metadata"]
    except (EOFError, pickle.UnpicklingError) as error:  # an empty or truncated file
        return [f"an unreadable {name}/.metadata ({type(error).__name__})"]
    shard_ends = {}  # shard file -> the byte where its last tensor ends
    for stored in metadata.storage_data.values():
        end = stored.offset + stored.length
        shard_ends[stored.relative_path] = max(end, shard_ends.get(stored.relative_path, 0))
    problems = []
    for shard, end in sorted(shard_ends.items()):
        path = os.path.join(folder, shard)
        if not os.path.isfile(path):
            problems.append(f"no {name}/{shard}")
        elif os.path.getsize(path) < end:
            problems.append(f"a truncated {name}/{shard}")
    return problems


def checkpoint_problems(folder: str) -> list[str]:
    """What a checkpoint lacks to be resumed from (empty when complete). Trainer writes the weights, then the
    processor, optimizer, scheduler and RNG states, and trainer_state.json last: a run killed while saving leaves a
    folder without it (or with a truncated one). A sharded checkpoint (FSDP's SHARDED_STATE_DICT) holds its weights
    and optimizer state as shards of every process instead of model.safetensors and optimizer.pt."""
    problems = []
    if is_sharded_checkpoint(folder):
        for sharded_folder in (SHARDED_WEIGHTS_FOLDER, SHARDED_OPTIMIZER_FOLDER):
            problems.extend(sharded_state_problems(os.path.join(folder, sharded_folder)))
    elif not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHTS_FILES):
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

    @property
    def saves_sharded_weights(self) -> bool:
        """FSDP with SHARDED_STATE_DICT: checkpoints hold every process's shard, and Trainer's save_model writes
        neither weights nor config nor processor."""
        return self.is_fsdp_enabled and "SHARDED_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Refuses non-finite weights. A sharded FSDP run's checkpoints get the config and processor beside the
        shards (to resume from and to merge), and its final save gathers the full weights into model.safetensors."""
        bad = [name for name, weight in self.model.named_parameters() if not torch.isfinite(weight).all()]
        if bad:
            raise NonFiniteLossError(
                f"Non-finite weights after step {self.state.global_step} ({len(bad)} tensors, first {bad[0]}): not "
                f"saving them over the checkpoints in {self.args.output_dir}."
            )
        if not self.saves_sharded_weights:
            super().save_model(output_dir, _internal_call)
        elif _internal_call:  # a checkpoint: Trainer then saves the shards with the optimiser state
            super().save_model(output_dir, _internal_call)
            if self.args.should_save:
                output_dir = output_dir or self.args.output_dir
                self.accelerator.unwrap_model(self.model).config.save_pretrained(output_dir)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(output_dir)
        else:  # the final model: "user trains with sharded, but final save is with full" (set_state_dict_type)
            plugin = self.accelerator.state.fsdp_plugin
            sharded = plugin.state_dict_type
            plugin.set_state_dict_type("FULL_STATE_DICT")
            try:
                super().save_model(output_dir, _internal_call)
            finally:
                plugin.set_state_dict_type(sharded)


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


def check_resumable(trainer: Trainer, checkpoint: str | None) -> None:
    """A sharded checkpoint resumes only under FSDP (Trainer would answer "only supported when using PyTorch
    FSDP" after loading everything else)."""
    if checkpoint is not None and is_sharded_checkpoint(checkpoint) and not trainer.is_fsdp_enabled:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} holds FSDP-sharded weights ({SHARDED_WEIGHTS_FOLDER}/) and this "
            "run does not use FSDP: launch it with `accelerate launch --config_file "
            "examples/accelerate_configs/fsdp2.yaml` on GPUs (Accelerate runs CPU processes with DDP), or merge the "
            "checkpoint with examples/merge_fsdp_checkpoint.py and continue from the merged folder with "
            "--model_name_or_path (with a new optimiser state)."
        )


def train_evaluate_predict(trainer: Trainer, training_args, checkpoint: str | None, tokenizer, extra_train_metrics: dict,
                           test_dataset=None) -> dict:
    """What every Trainer script does after building its Trainer: `do_train` (resumable; saves the model and the
    tokenizer and says which steps this call ran: trainer_state.json has them all), `do_eval`, `do_predict` on
    `test_dataset`; each split's metrics logged and saved. Returns all metrics."""
    metrics = {}
    if training_args.do_train:
        check_resumable(trainer, checkpoint)
        first_step = checkpoint_step(checkpoint)  # read now: checkpoint rotation may delete the folder while training
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(training_args.output_dir)  # the processor, plus the VQ-VAE of a prior on codes
        train_metrics = {
            **train_result.metrics,
            "resumed_from_step": first_step,
            "train_steps_in_this_run": trainer.state.global_step - first_step,
            **extra_train_metrics,
        }
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics.update(train_metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.do_predict and test_dataset is not None:
        test_metrics = trainer.predict(test_dataset, metric_key_prefix="test").metrics
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)
    return metrics


def write_model_card(trainer: Trainer, training_args, finetuned_from: str | None, task: str, tags: list[str], dataset):
    """The run's README.md (pushed with --push_to_hub)."""
    card = {
        "model_name": os.path.basename(os.path.normpath(training_args.output_dir)),
        "finetuned_from": finetuned_from,
        "tasks": task,
        "tags": tags,
        "dataset": dataset,
    }
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.create_model_card(**card)
