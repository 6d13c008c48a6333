"""FSDP2 sharded training on CPUs: two gloo processes against one, resume from a sharded checkpoint, merge to one
folder, and run_pretraining itself under Trainer's FSDP2 path.

What runs here and what does not (accelerate 1.15, torch 2.13, no accelerator device):

- `accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml` turns the YAML into the FSDP_* environment
  and starts the processes; `FullyShardedDataParallelPlugin()` reads that environment in each one. Tested.
- torch's FSDP2 (`fully_shard`) runs on CPU tensors over gloo. Accelerate itself does not select FSDP there:
  `AcceleratorState` upgrades the distributed type to FSDP only from an accelerator type (MULTI_GPU, MULTI_XPU, ...),
  so a CPU run with the FSDP config silently becomes plain DDP (MULTI_CPU), and `Trainer` then trains without
  sharding. Two workers below get round it:
  - `accelerate_functions` hands the plugin to the CPU state and calls accelerate's own FSDP2 functions
    (`fsdp2_apply_ac`, `fsdp2_prepare_model`: auto-wrap per IGPTBlock, activation checkpointing, rank-0 weight
    broadcast) and its checkpoint functions (`save_fsdp_model` / `save_fsdp_optimizer` and their loaders, the ones
    Trainer calls), then `accelerate merge-weights`: losses against one process, resume, merge.
  - `run_pretraining` sets, right after `AcceleratorState` has initialised the CPU processes, what its GPU branch
    sets (`distributed_type = FSDP` and the plugin; `force_fsdp_on_cpu_processes`), then runs
    examples/run_pretraining.py's `main` twice: 4 steps with sharded checkpoints at steps 2 and 4, and a second run
    resumed from checkpoint-2. This is Trainer's own FSDP2 path (`accelerator.prepare`, its checkpoint saves, its
    resume, the final `save_model`) on CPUs; only the device differs from a GPU run.
- bf16 mixed precision: the tests run fp32 (`--mixed_precision no`) so that losses can be compared exactly.

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
# The accelerate_functions worker: `accelerate launch --config_file fsdp2.yaml --num_processes 2 tests/test_fsdp.py
# accelerate_functions OUTPUT`
# ---------------------------------------------------------------------------------------------------------------------


def sharded_model(accelerator, seed: int):
    from accelerate.utils.fsdp_utils import fsdp2_apply_ac, fsdp2_prepare_model

    model = new_model(seed)
    plugin = accelerator.state.fsdp_plugin
    if plugin.activation_checkpointing:
        model = fsdp2_apply_ac(accelerator, model)  # as Accelerator.prepare does, before sharding
    return fsdp2_prepare_model(accelerator, model)


def accelerate_functions_worker(output_dir: str):
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
# The run_pretraining worker: `accelerate launch --config_file fsdp2.yaml --num_processes 2 tests/test_fsdp.py
# run_pretraining OUTPUT`
# ---------------------------------------------------------------------------------------------------------------------


PRETRAINING = [
    "--dataset_name", "digits", "--image_size", "8", "--n_clusters", "8", "--palette_max_pixels", "20000",
    "--num_hidden_layers", "2", "--hidden_size", "32", "--num_attention_heads", "2",
    "--max_train_samples", "64", "--per_device_train_batch_size", "4", "--max_steps", str(STEPS),
    "--save_strategy", "steps", "--save_steps", str(SAVE_AT), "--logging_steps", "1", "--eval_strategy", "no",
    "--do_eval", "false", "--disable_tqdm", "true", "--seed", "0",
]  # fmt: skip


def force_fsdp_on_cpu_processes():
    """What `AcceleratorState.__init__` sets for GPU processes launched with an FSDP config, set for CPU ones too:
    the distributed type FSDP and the plugin Accelerator built from the FSDP_* environment."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    initialise = AcceleratorState.__init__

    def initialise_with_fsdp(state, *args, fsdp_plugin=None, **kwargs):
        initialise(state, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if state.distributed_type == DistributedType.MULTI_CPU:
            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = fsdp_plugin or FullyShardedDataParallelPlugin()

    AcceleratorState.__init__ = initialise_with_fsdp


def pretraining_worker(output_dir: str):
    from example_scripts import load_example

    force_fsdp_on_cpu_processes()
    run_pretraining = load_example("run_pretraining")
    run_pretraining.main([*PRETRAINING, "--output_dir", os.path.join(output_dir, "full")])
    checkpoint = os.path.join(output_dir, "full", f"checkpoint-{SAVE_AT}")
    run_pretraining.main([*PRETRAINING, "--output_dir", os.path.join(output_dir, "resumed"),
                          "--resume_from_checkpoint", checkpoint])  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------------


def launch(worker_name: str, output_dir, port: int):
    """Two CPU processes launched from the FSDP2 config (fp32 here), as a user launches training."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG,
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port),
        os.path.abspath(__file__), worker_name, str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]


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
    output_dir = tmp_path_factory.mktemp("fsdp")
    launch("accelerate_functions", output_dir, port=29517)
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


@pytest.fixture(scope="module")
def pretraining_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("fsdp_pretraining")
    launch("run_pretraining", output_dir, port=29519)
    return output_dir


def read_json(path) -> dict:
    with open(path) as file:
        return json.load(file)


def logged_losses(run_folder) -> dict[int, float]:
    history = read_json(run_folder / "trainer_state.json")["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_trainer_checkpoints_are_sharded_with_config_and_processor(pretraining_run):
    from modeling_igpt.training import checkpoint_problems

    checkpoint = pretraining_run / "full" / f"checkpoint-{SAVE_AT}"
    files = sorted(path.name for path in checkpoint.iterdir())
    assert "model.safetensors" not in files  # the weights are the processes' shards
    for name in ("pytorch_model_fsdp_0", "optimizer_0"):
        shards = sorted(path.name for path in (checkpoint / name).iterdir())
        assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard per process
    assert {"config.json", "preprocessor_config.json", "trainer_state.json", "scheduler.pt"} <= set(files)
    assert checkpoint_problems(str(checkpoint)) == []


def test_run_pretraining_resumes_a_sharded_checkpoint(pretraining_run):
    full, resumed = logged_losses(pretraining_run / "full"), logged_losses(pretraining_run / "resumed")
    assert sorted(full) == sorted(resumed) == list(range(1, STEPS + 1))  # steps 1-2 come from the checkpoint's state
    results = read_json(pretraining_run / "resumed" / "train_results.json")
    assert (results["resumed_from_step"], results["train_steps_in_this_run"]) == (SAVE_AT, STEPS - SAVE_AT)
    assert max(full.values()) - min(full.values()) > 100 * LOSS_TOLERANCE  # the steps differ: a wrong resume would show
    for step in range(SAVE_AT + 1, STEPS + 1):  # same weights, optimiser state, schedule and batches as the full run
        assert abs(resumed[step] - full[step]) <= LOSS_TOLERANCE, f"step {step}: {resumed[step]} vs {full[step]}"


def test_final_save_of_a_sharded_run_is_one_publishable_folder(pretraining_run, tmp_path):
    from safetensors.torch import load_file

    from example_scripts import load_example
    from hub_cards.checkpoint import load_checkpoint

    output = pretraining_run / "full"
    model, processor = load_checkpoint(output)  # what hub_cards/publish.py loads and validates first
    assert model.config.num_hidden_layers == 2 and processor.n_clusters == 8
    # the gathered weights are the last checkpoint's shards, merged here on one CPU without --config_from
    merged = load_example("merge_fsdp_checkpoint").merge_fsdp_checkpoint(output / f"checkpoint-{STEPS}", tmp_path / "m")
    assert isinstance(merged, IGPTForCausalImageModeling)
    final_weights = load_file(output / "model.safetensors")
    merged_weights = load_file(tmp_path / "m" / "model.safetensors")
    assert sorted(final_weights) == sorted(merged_weights)
    for name, tensor in merged_weights.items():
        assert torch.equal(final_weights[name], tensor), name


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("pytorch_model_fsdp_0/__1_0.distcp", "no pytorch_model_fsdp_0/__1_0.distcp"),  # e.g. disks not shared
        ("optimizer_0/.metadata", "no optimizer_0/.metadata"),
        ("truncate optimizer_0/__0_0.distcp", "a truncated optimizer_0/__0_0.distcp"),
        ("truncate pytorch_model_fsdp_0/.metadata", "an unreadable pytorch_model_fsdp_0/.metadata"),
    ],
)
def test_an_incomplete_sharded_checkpoint_is_skipped_and_refused(pretraining_run, tmp_path, caplog, damage, problem):
    import shutil
    from types import SimpleNamespace

    from modeling_igpt.training import resolve_checkpoint

    complete = tmp_path / f"checkpoint-{SAVE_AT}"
    shutil.copytree(pretraining_run / "full" / f"checkpoint-{SAVE_AT}", complete)
    broken = tmp_path / f"checkpoint-{STEPS}"
    shutil.copytree(pretraining_run / "full" / f"checkpoint-{STEPS}", broken)
    if damage.startswith("truncate "):
        with open(broken / damage.removeprefix("truncate "), "r+b") as file:
            file.truncate(100)
    else:
        (broken / damage).unlink()
    with caplog.at_level("WARNING"):
        last = resolve_checkpoint(SimpleNamespace(resume_from_checkpoint="last", output_dir=str(tmp_path)))
    assert last == str(complete)
    assert str(broken) in caplog.text and problem in caplog.text
    with pytest.raises(ValueError, match=f"incomplete checkpoint \\({problem}"):
        resolve_checkpoint(SimpleNamespace(resume_from_checkpoint=str(broken), output_dir=str(tmp_path)))


def test_a_sharded_checkpoint_without_fsdp_is_refused_naming_what_to_do(pretraining_run, tmp_path):
    from transformers import Trainer, TrainingArguments

    from modeling_igpt.training import check_resumable

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = Trainer(model=new_model(seed=0), args=args)  # one process: no FSDP
    checkpoint = str(pretraining_run / "full" / f"checkpoint-{SAVE_AT}")
    with pytest.raises(ValueError, match="holds FSDP-sharded weights .*merge_fsdp_checkpoint.py"):
        check_resumable(trainer, checkpoint)
    check_resumable(trainer, None)


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
    workers = {"accelerate_functions": accelerate_functions_worker, "run_pretraining": pretraining_worker}
    workers[sys.argv[1]](sys.argv[2])
