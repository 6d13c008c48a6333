"""FSDP2 sharded training on CPUs: two gloo processes against one, resume from a sharded checkpoint, merge to one
folder.

What runs here and what does not (accelerate 1.15, torch 2.13, no accelerator device):

- `accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml` turns the YAML into the FSDP_* environment
  and starts the processes; `FullyShardedDataParallelPlugin()` reads that environment in each one. Tested.
- torch's FSDP2 (`fully_shard`) runs on CPU tensors over gloo. Accelerate itself does not select FSDP there:
  `AcceleratorState` upgrades the distributed type to FSDP only from an accelerator type (MULTI_GPU, MULTI_XPU, ...),
  so a CPU run with the FSDP config silently becomes plain DDP (MULTI_CPU), and `Trainer` then trains without
  sharding. The worker below therefore hands the plugin to the CPU state and calls accelerate's own FSDP2 functions
  (`fsdp2_apply_ac`, `fsdp2_prepare_model`: auto-wrap per IGPTBlock, activation checkpointing, rank-0 weight
  broadcast) and its checkpoint functions (`save_fsdp_model` / `save_fsdp_optimizer` and their loaders, the ones
  Trainer calls), then `accelerate merge-weights`. Trainer's FSDP loop itself is exercised only on GPUs.
- bf16 mixed precision: the test runs fp32 (`--mixed_precision no`) so that losses can be compared with one process.

Losses: two processes with 4 sequences each and one process with the same 8 sequences take the same optimiser steps;
the per-step losses agree within 1e-5 (fp32; only the order of the gradient sums differs).
"""

import json
import os
import subprocess
import sys

import pytest
import torch


from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


FSDP_CONFIG = os.path.join(ROOT, "examples", "accelerate_configs", "fsdp2.yaml")
GLOBAL_BATCH, STEPS, SAVE_AT = 8, 4, 2
LOSS_TOLERANCE = 1e-5


def tiny_config() -> IGPTConfig:
    return IGPTConfig(
        vocab_size=17, max_position_embeddings=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2
    )


def new_model(seed: int) -> IGPTForCausalImageModeling:
    torch.manual_seed(seed)
    return IGPTForCausalImageModeling(tiny_config())


def batches() -> torch.LongTensor:
    """Every step's global batch of 16-token images, the same in every process: (STEPS, GLOBAL_BATCH, 16)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 16, (STEPS, GLOBAL_BATCH, 16), generator=generator)


def train_step(model, optimizer, input_ids: torch.LongTensor) -> torch.Tensor:
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def new_optimizer(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# The worker: run by `accelerate launch --config_file fsdp2.yaml --num_processes 2 tests/test_fsdp.py OUTPUT`
# ---------------------------------------------------------------------------------------------------------------------


def sharded_model(accelerator, seed: int):
    from accelerate.utils.fsdp_utils import fsdp2_apply_ac, fsdp2_prepare_model

    model = new_model(seed)
    plugin = accelerator.state.fsdp_plugin
    if plugin.activation_checkpointing:
        model = fsdp2_apply_ac(accelerator, model)  # as Accelerator.prepare does, before sharding
    return fsdp2_prepare_model(accelerator, model)


def worker(output_dir: str):
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import load_fsdp_model, load_fsdp_optimizer, save_fsdp_model, save_fsdp_optimizer
    from torch.distributed.fsdp import FSDPModule

    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* environment `accelerate launch` wrote from the YAML
    accelerator = Accelerator(cpu=True)  # gloo; accelerate keeps CPU processes on MULTI_CPU (see the module docstring)
    accelerator.state.fsdp_plugin = plugin
    rank, world = accelerator.process_index, accelerator.num_processes
    local = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)

    def global_loss(loss: torch.Tensor) -> float:
        dist.all_reduce(loss)  # every rank scores the same number of tokens: the mean of means is the global mean
        return loss.item() / world

    model = sharded_model(accelerator, seed=0)
    blocks = [module for module in model.modules() if isinstance(module, FSDPModule)]
    optimizer = new_optimizer(model)
    checkpoint = os.path.join(output_dir, f"checkpoint-{SAVE_AT}")
    losses = []
    for step, batch in enumerate(batches(), start=1):
        losses.append(global_loss(train_step(model, optimizer, batch[local])))
        if step == SAVE_AT:
            save_fsdp_model(plugin, accelerator, model, checkpoint)
            save_fsdp_optimizer(plugin, accelerator, optimizer, model, checkpoint)

    # Resume: another initialisation, weights and AdamW state read back from the shards.
    resumed = sharded_model(accelerator, seed=1)
    resumed_optimizer = new_optimizer(resumed)
    load_fsdp_model(plugin, accelerator, resumed, checkpoint)
    load_fsdp_optimizer(plugin, accelerator, resumed_optimizer, resumed, checkpoint)
    resumed_losses = [global_loss(train_step(resumed, resumed_optimizer, batch[local])) for batch in batches()[SAVE_AT:]]

    if accelerator.is_main_process:
        report = {
            "world_size": world,
            "plugin": {
                "fsdp_version": plugin.fsdp_version,
                "transformer_cls_names_to_wrap": plugin.transformer_cls_names_to_wrap,
                "activation_checkpointing": plugin.activation_checkpointing,
                "state_dict_type": str(plugin.state_dict_type),
            },
            "fsdp_units": [type(module).__name__ for module in blocks],
            "activation_checkpoint_wrappers": sum("CheckpointWrapper" in type(m).__name__ for m in model.modules()),
            "losses": losses,
            "resumed_losses": resumed_losses,
            "shard_files": sorted(os.listdir(os.path.join(checkpoint, "pytorch_model_fsdp_0"))),
        }
        with open(os.path.join(output_dir, "report.json"), "w") as file:
            json.dump(report, file)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------------------


def one_process_reference() -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of every step over the whole global batch in one process, and the weights after step SAVE_AT."""
    model, weights = new_model(seed=0), None
    optimizer = new_optimizer(model)
    losses = []
    for step, batch in enumerate(batches(), start=1):
        losses.append(train_step(model, optimizer, batch).item())
        if step == SAVE_AT:
            weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    return losses, weights


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """Two CPU processes launched from the FSDP2 config (fp32 here), as a user launches training."""
    output_dir = tmp_path_factory.mktemp("fsdp")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG,
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "29517",
        os.path.abspath(__file__), str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(output_dir / "report.json") as file:
        return output_dir, json.load(file)


def test_config_shards_each_block_with_activation_checkpointing(fsdp_run):
    _, report = fsdp_run
    assert report["world_size"] == 2
    assert report["plugin"]["fsdp_version"] == 2
    assert report["plugin"]["transformer_cls_names_to_wrap"] == ["IGPTBlock"]
    assert report["plugin"]["activation_checkpointing"] is True
    assert "SHARDED_STATE_DICT" in report["plugin"]["state_dict_type"]
    num_layers = tiny_config().num_hidden_layers
    assert report["fsdp_units"].count("FSDPIGPTBlock") == num_layers
    assert report["activation_checkpoint_wrappers"] == num_layers
    assert report["shard_files"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard per process


def test_two_processes_match_one_over_the_same_global_batch(fsdp_run):
    _, report = fsdp_run
    reference, _ = one_process_reference()
    assert len(report["losses"]) == STEPS
    # the steps move the loss by far more than the tolerance, so a wrong gradient would show
    assert max(reference) - min(reference) > 100 * LOSS_TOLERANCE
    for step, (sharded, single) in enumerate(zip(report["losses"], reference), start=1):
        assert abs(sharded - single) <= LOSS_TOLERANCE, f"step {step}: 2 processes {sharded}, 1 process {single}"


def test_resume_from_sharded_checkpoint_continues_the_same_run(fsdp_run):
    _, report = fsdp_run
    # same processes, same shards, same batches: the resumed steps repeat the uninterrupted ones
    assert report["resumed_losses"] == pytest.approx(report["losses"][SAVE_AT:], abs=1e-6)


def test_merged_checkpoint_loads_with_from_pretrained(fsdp_run, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    from image_processing import IGPTImageProcessor

    output_dir, _ = fsdp_run
    run_folder = tmp_path / "run"  # what a sharded run leaves for the merge: the run's config and processor
    tiny_config().save_pretrained(run_folder)
    palette = np.random.default_rng(0).uniform(-1, 1, (16, 3))
    IGPTImageProcessor(clusters=palette, size={"height": 4, "width": 4}).save_pretrained(run_folder)
    merged = tmp_path / "merged"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "merge_fsdp_checkpoint.py"),
        str(output_dir / f"checkpoint-{SAVE_AT}"), str(merged), "--config_from", str(run_folder),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(path.name for path in merged.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]

    _, reference = one_process_reference()
    merged_weights = load_file(merged / "model.safetensors")
    assert sorted(merged_weights) == sorted(reference)
    for name, tensor in reference.items():
        torch.testing.assert_close(merged_weights[name], tensor, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    model = IGPTForCausalImageModeling.from_pretrained(merged)
    torch.testing.assert_close(model.lm_head.weight, reference["lm_head.weight"], atol=1e-5, rtol=1e-4)


def test_merge_refuses_a_folder_without_shards(tmp_path):
    from example_scripts import load_example

    merge = load_example("merge_fsdp_checkpoint")
    with pytest.raises(FileNotFoundError, match="no sharded FSDP weights"):
        merge.merge_fsdp_checkpoint(tmp_path, tmp_path / "merged")


def test_deepspeed_config_is_zero3_with_trainer_filled_values():
    """DeepSpeed needs CUDA and is not installed here: only the files' shape is checked (not DeepSpeed running)."""
    import yaml

    with open(os.path.join(ROOT, "examples", "accelerate_configs", "deepspeed_zero3.yaml")) as file:
        launch = yaml.safe_load(file)
    assert launch["distributed_type"] == "DEEPSPEED"
    config_file = launch["deepspeed_config"]["deepspeed_config_file"]
    with open(os.path.join(ROOT, config_file)) as file:
        config = json.load(file)
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes weights
    assert config["bf16"]["enabled"] == "auto" and config["optimizer"]["params"]["betas"] == "auto"  # from --bf16, beta2


if __name__ == "__main__":
    worker(sys.argv[1])
