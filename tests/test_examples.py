"""End-to-end tests of the example scripts on tiny settings (scikit-learn's bundled digits, offline), run as
subprocesses the way a user runs them, plus unit tests of the shared data code they rely on."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


from example_scripts import EXAMPLES, load_example
from image_processing.data import DataArguments, digits_dataset, load_image_splits
from modeling_igpt import (
    IGPTForCausalImageModeling,
    ImageTokenizer,
    PretrainingCollator,
    bits_per_dim,
    model_inputs,
    random_pad_crop_flip,
)


ROOT = Path(__file__).resolve().parents[1]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
DIGITS = ["--dataset_name", "digits"]
TINY_MODEL = ["--image_size", "8", "--n_clusters", "8", "--num_hidden_layers", "2", "--hidden_size", "64",
              "--num_attention_heads", "4", "--palette_max_pixels", "20000"]  # fmt: skip
QUIET = ["--disable_tqdm", "true", "--seed", "0"]


def run(script: str, *args: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*launcher, str(EXAMPLES / script), *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if result.returncode:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A 2-layer model pretrained for 6 epochs on digits, evaluated before and after every epoch."""
    output = tmp_path_factory.mktemp("pretrained")
    run(
        "run_pretraining.py", *DIGITS, *TINY_MODEL, *QUIET, "--output_dir", str(output),
        "--num_train_epochs", "6", "--per_device_train_batch_size", "32", "--learning_rate", "3e-3",
        "--eval_on_start", "true", "--save_strategy", "no", "--logging_steps", "10",
    )  # fmt: skip
    return output


# --- Pretraining -----------------------------------------------------------------------------------------------------


def load_training_args(path):
    """Trainer's training_args.bin, read with weights_only=True: only the classes a TrainingArguments pickle names."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    from transformers import TrainingArguments
    from transformers.trainer_pt_utils import AcceleratorConfig
    from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType
    from transformers.training_args import OptimizerNames

    allowed = [TrainingArguments, SchedulerType, OptimizerNames, IntervalStrategy, SaveStrategy, HubStrategy,
               AcceleratorConfig, PartialState, DistributedType]  # fmt: skip
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_pretraining_lowers_validation_loss_and_saves_model_processor_and_card(pretrained):
    history = read_json(pretrained / "trainer_state.json")["log_history"]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    assert len(eval_losses) >= 7  # before training, then after each of 6 epochs
    assert eval_losses[-1] < 0.8 * eval_losses[0]
    results = read_json(pretrained / "eval_results.json")
    assert math.isclose(results["eval_bits_per_dim"], results["eval_loss"] / math.log(2), rel_tol=1e-9)

    model = IGPTForCausalImageModeling.from_pretrained(pretrained)
    tokenizer = ImageTokenizer.from_pretrained(str(pretrained))
    assert tokenizer.num_tokens <= 8 and model.config.vocab_size == tokenizer.vocab_size
    assert model.config.max_position_embeddings == 64
    training_args = load_training_args(pretrained / "training_args.bin")
    assert (training_args.adam_beta2, training_args.weight_decay) == (0.95, 0.0)  # paper, Appendix A.1
    assert training_args.lr_scheduler_type == "cosine"
    assert "igpt" in (pretrained / "README.md").read_text()


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_run(tmp_path):
    common = [*DIGITS, *TINY_MODEL, *QUIET, "--max_steps", "6", "--per_device_train_batch_size", "16",
              "--save_strategy", "steps", "--save_steps", "3", "--eval_strategy", "no", "--logging_steps", "1",
              "--max_train_samples", "96"]  # fmt: skip
    run("run_pretraining.py", *common, "--output_dir", str(tmp_path / "full"))
    resumed_run = run(
        "run_pretraining.py", *common, "--output_dir", str(tmp_path / "resumed"),
        "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-3"),
    )  # fmt: skip
    assert (resumed_run.stdout + resumed_run.stderr).count("'loss'") == 3  # trained steps 4-6 only, not 1-6

    def losses(name):
        history = read_json(tmp_path / name / "trainer_state.json")["log_history"]
        return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}

    full, resumed = losses("full"), losses("resumed")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # steps 1-3 come from the checkpoint's state
    for step in (4, 5, 6):
        assert math.isclose(resumed[step], full[step], rel_tol=1e-4), (step, resumed[step], full[step])


@pytest.mark.slow
def test_compiled_pretraining_matches_eager_and_saves_a_plain_model(tmp_path):
    """`--torch_compile true` (the reproduction's cpu preset) trains the same model as eager: the same losses step by
    step, and a saved folder that loads with the same parameter names and values (no compile wrapper's prefixes)."""
    common = [*DIGITS, *TINY_MODEL, *QUIET, "--max_steps", "5", "--per_device_train_batch_size", "16",
              "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1", "--max_train_samples", "80",
              "--learning_rate", "3e-3"]  # fmt: skip
    for mode in ("false", "true"):
        run("run_pretraining.py", *common, "--torch_compile", mode, "--output_dir", str(tmp_path / mode))

    def losses(name):
        history = read_json(tmp_path / name / "trainer_state.json")["log_history"]
        return [entry["loss"] for entry in history if "loss" in entry]

    eager, compiled = losses("false"), losses("true")
    assert len(eager) == len(compiled) == 5
    for step, (ours, theirs) in enumerate(zip(compiled, eager), start=1):
        assert math.isclose(ours, theirs, rel_tol=1e-3), (step, ours, theirs)
    eager_model = IGPTForCausalImageModeling.from_pretrained(tmp_path / "false")
    compiled_model = IGPTForCausalImageModeling.from_pretrained(tmp_path / "true")
    eager_weights, compiled_weights = eager_model.state_dict(), compiled_model.state_dict()
    assert compiled_weights.keys() == eager_weights.keys()
    for name, weight in compiled_weights.items():
        torch.testing.assert_close(weight, eager_weights[name], atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.slow
def test_accelerate_launch_with_two_processes(tmp_path):
    """DDP over gloo on CPU. (`accelerate launch --cpu` starts one process; `--multi_gpu` starts torchrun, and the
    scripts default to `use_cpu` when there is no accelerator.) 96 images, 8 per process, 2 processes, 2 epochs
    -> 96 / 16 * 2 = 12 optimiser steps; a single process would take 24."""
    run(
        "run_pretraining.py", *DIGITS, *TINY_MODEL, *QUIET, "--output_dir", str(tmp_path),
        "--max_train_samples", "96", "--max_eval_samples", "32", "--per_device_train_batch_size", "8",
        "--num_train_epochs", "2", "--save_strategy", "no", "--eval_strategy", "no",
        launcher=("accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"),
    )  # fmt: skip
    state = read_json(tmp_path / "trainer_state.json")
    assert state["global_step"] == 12
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "preprocessor_config.json").exists()


@pytest.mark.slow
def test_bert_pretraining_then_fine_tuning_with_the_mask_ensemble(tmp_path):
    tiny = [*DIGITS, *QUIET, "--max_train_samples", "64", "--max_eval_samples", "32", "--per_device_train_batch_size", "16",
            "--max_steps", "4", "--save_strategy", "no"]  # fmt: skip
    run("run_pretraining.py", *tiny, *TINY_MODEL, "--objective", "bert", "--eval_strategy", "no",
        "--output_dir", str(tmp_path / "bert"))  # fmt: skip
    assert read_json(tmp_path / "bert" / "config.json")["objective"] == "bert"
    run("run_image_classification.py", *tiny, "--model_name_or_path", str(tmp_path / "bert"), "--num_masks", "3",
        "--eval_strategy", "no", "--load_best_model_at_end", "false", "--output_dir", str(tmp_path / "classifier"))  # fmt: skip
    for split in ("eval", "test"):  # 32 images each: an accuracy is a count of them over 32
        correct = read_json(tmp_path / "classifier" / f"{split}_results.json")[f"{split}_accuracy"] * 32
        assert 0 <= correct <= 32 and correct == pytest.approx(round(correct), abs=1e-6), correct


@pytest.mark.slow
def test_pretraining_on_vqvae_codes_and_sampling_decodes_them(tmp_path):
    from modeling_igpt.configuration_vqvae import IGPTVQVAEConfig
    from modeling_igpt.modeling_vqvae import IGPTVQVAEModel

    vqvae_config = IGPTVQVAEConfig(image_size=16, latent_size=8, codebook_size=32, hidden_size=16, residual_hidden_size=8)
    IGPTVQVAEModel(vqvae_config).save_pretrained(tmp_path / "vqvae")
    run(
        "run_pretraining.py", *DIGITS, *QUIET, "--vqvae_model", str(tmp_path / "vqvae"), "--output_dir", str(tmp_path / "prior"),
        "--num_hidden_layers", "1", "--hidden_size", "32", "--num_attention_heads", "2", "--max_steps", "3",
        "--max_train_samples", "48", "--max_eval_samples", "16", "--per_device_train_batch_size", "16",
        "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
    )  # fmt: skip
    assert not (tmp_path / "prior" / "checkpoint-2" / "vqvae").exists()  # a Trainer checkpoint holds the processor only
    run(
        "run_pretraining.py", *DIGITS, *QUIET, "--vqvae_model", str(tmp_path / "vqvae"), "--output_dir",
        str(tmp_path / "resumed"), "--resume_from_checkpoint", str(tmp_path / "prior" / "checkpoint-2"),
        "--num_hidden_layers", "1", "--hidden_size", "32", "--num_attention_heads", "2", "--max_steps", "3",
        "--max_train_samples", "48", "--max_eval_samples", "16", "--per_device_train_batch_size", "16",
        "--save_strategy", "no", "--eval_strategy", "no",
    )  # fmt: skip
    results = read_json(tmp_path / "resumed" / "all_results.json")
    assert (results["resumed_from_step"], results["train_steps_in_this_run"]) == (2, 1)  # steps 1-2: the checkpoint's
    assert (tmp_path / "resumed" / "vqvae" / "config.json").exists()
    config = read_json(tmp_path / "prior" / "config.json")
    assert (config["vocab_size"], config["max_position_embeddings"]) == (33, 64)  # 32 codes + start, 8x8 latent grid
    assert (tmp_path / "prior" / "vqvae" / "config.json").exists()
    run("run_sampling.py", "--model_name_or_path", str(tmp_path / "prior"), "--output_dir", str(tmp_path / "samples"),
        "--num_samples", "4", "--static_cache")  # fmt: skip
    with Image.open(tmp_path / "samples" / "samples.png") as grid:
        assert grid.size == (2 * (16 + 2) + 2,) * 2  # 2x2 decoded 16x16 images, 2-pixel padding


# --- Linear probe and fine-tuning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(pretrained) -> dict:
    run(
        "run_linear_probe.py", *DIGITS, "--model_name_or_path", str(pretrained), "--output_dir", str(pretrained / "probe"),
        "--concat_layers", "2", "--low_data_labels_per_class", "10", "--low_data_subsets", "3", *QUIET,
    )  # fmt: skip
    return read_json(pretrained / "probe" / "probe_results.json")


@pytest.mark.slow
def test_linear_probe_beats_chance_at_every_depth_and_writes_its_plot(probe, pretrained):
    assert [entry["layer"] for entry in probe["layers"]] == [0, 1, 2]
    assert probe["chance_accuracy"] == pytest.approx(0.1)
    assert probe["best_layer_test_accuracy"] > 0.6  # chance is 0.1
    assert all(entry["test_accuracy"] > 0.3 for entry in probe["layers"])
    assert probe["best_layer"] == max(probe["layers"], key=lambda entry: entry["validation_accuracy"])["layer"]
    assert len(probe["concat_layers"]) == 2 and probe["concat_test_accuracy"] > 0.3
    (low_data,) = probe["low_data"]
    assert len(low_data["test_accuracies"]) == 3 and low_data["mean"] > 0.2
    with Image.open(pretrained / "probe" / "probe_accuracy.png") as plot:
        assert plot.format == "PNG" and plot.width > 200


@pytest.mark.slow
def test_fine_tuning_beats_the_probe_of_the_layer_it_pools(pretrained, probe, tmp_path):
    """The classifier pools f^L, so it is compared with the probe on f^L: training every weight must beat fixed
    features. Not with the best layer: a tiny model's best probe is often layer 0, a random-feature map of the raw
    pixels fitted on standardised features, which a few CPU epochs of fine-tuning from a zero head need not beat.
    No flips or crops: a mirrored digit is often another digit (the paper's augmentation is for CIFAR photos)."""
    run(
        "run_image_classification.py", *DIGITS, "--model_name_or_path", str(pretrained), "--output_dir", str(tmp_path),
        "--num_train_epochs", "12", "--per_device_train_batch_size", "32", "--learning_rate", "3e-3",
        "--augment", "false", "--save_total_limit", "1", "--early_stopping_patience", "3", *QUIET,
    )  # fmt: skip
    test = read_json(tmp_path / "test_results.json")
    final_layer_probe = probe["layers"][-1]["test_accuracy"]
    assert test["test_accuracy"] > final_layer_probe, (test["test_accuracy"], final_layer_probe)
    config = read_json(tmp_path / "config.json")
    assert config["id2label"]["3"] == "3" and (tmp_path / "README.md").exists()


# --- Sampling --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sampling_is_reproducible_and_completions_keep_the_given_half(pretrained, tmp_path):
    args = ["--model_name_or_path", str(pretrained), "--num_samples", "4", "--num_completions", "2",
            "--completions_per_image", "2", "--top_k", "4", *DIGITS]  # fmt: skip
    run("run_sampling.py", *args, "--output_dir", str(tmp_path / "a"), "--seed", "1")
    run("run_sampling.py", *args, "--output_dir", str(tmp_path / "b"), "--seed", "1")
    grids = [np.array(Image.open(tmp_path / name / "samples.png")) for name in "ab"]
    assert np.array_equal(grids[0], grids[1])  # same seed, same samples
    first, second = grids[0][2:10, 2:10], grids[0][2:10, 12:20]
    assert not np.array_equal(first, second)  # but the samples in one grid differ

    # completions.png rows: [given top half, 2 completions, original], 8x8 cells with 2-pixel padding
    completions = np.array(Image.open(tmp_path / "a" / "completions.png"))

    def cell(row, column):
        top, left = 2 + row * 10, 2 + column * 10
        return completions[top : top + 8, left : left + 8]

    for row in range(2):
        original = cell(row, 3)
        assert np.array_equal(cell(row, 0)[:4], original[:4]) and not cell(row, 0)[4:].any()
        for column in (1, 2):
            assert np.array_equal(cell(row, column)[:4], original[:4])


# --- Bad arguments fail before any training ------------------------------------------------------------------------


@pytest.fixture
def pretraining_script(monkeypatch):
    """run_pretraining, in-process, with palette fitting and the Trainer replaced by tripwires."""
    run_pretraining = load_example("run_pretraining")

    def tripwire(*args, **kwargs):
        raise AssertionError("reached palette fitting or training despite bad arguments")

    monkeypatch.setattr(run_pretraining, "fit_palette", tripwire)
    monkeypatch.setattr(run_pretraining, "BitsPerDimTrainer", tripwire)
    return run_pretraining


def test_missing_image_column_fails_naming_the_columns(pretraining_script, tmp_path):
    with pytest.raises(ValueError, match=r"no image column 'photo': the dataset has columns \['image', 'label'\]"):
        pretraining_script.main([*DIGITS, "--image_column_name", "photo", "--output_dir", str(tmp_path)])


def test_unknown_objective_fails_listing_the_choices(pretraining_script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretraining_script.main([*DIGITS, "--objective", "diffusion", "--output_dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert "--objective" in error and "invalid choice: 'diffusion'" in error and "'autoregressive', 'bert'" in error


def test_non_parquet_files_and_missing_sources_are_refused(pretraining_script, tmp_path):
    with pytest.raises(ValueError, match="must be a parquet file"):
        pretraining_script.main(["--train_file", "images.csv", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="exactly one data source"):
        pretraining_script.main(["--output_dir", str(tmp_path)])


# --- Shared data code --------------------------------------------------------------------------------------------------


def test_autoregressive_collation_predicts_every_pixel_after_the_start_token():
    pixels = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    batch = PretrainingCollator("autoregressive", start_token_id=10)([{"pixel_ids": row} for row in pixels])
    assert batch["input_ids"].tolist() == [[10, 3, 1, 4], [10, 5, 9, 2]]
    assert batch["labels"].tolist() == [[-100, 3, 1, 4, 1], [-100, 5, 9, 2, 6]]
    bert = PretrainingCollator("bert", start_token_id=10)([{"pixel_ids": row} for row in pixels])
    mask = bert["bool_masked_pos"]  # BERT: targets on the mask only (tests/test_reliability_scripts.py)
    assert torch.equal(bert["input_ids"], pixels) and torch.equal(bert["labels"], pixels.masked_fill(~mask, -100))
    assert torch.equal(model_inputs(pixels, "bert", 10), pixels)


def test_random_pad_crop_flip_returns_shifted_or_mirrored_crops_of_the_reflected_grid():
    side, padding = 4, 1
    grid = torch.arange(side * side).view(1, 1, side, side).float()
    padded = torch.nn.functional.pad(grid, (padding,) * 4, mode="reflect")[0, 0]
    candidates = set()
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[top : top + side, left : left + side]
            candidates |= {tuple(crop.flatten().long().tolist()), tuple(crop.flip(-1).flatten().long().tolist())}
    pixels = torch.arange(side * side).repeat(64, 1)
    augmented = random_pad_crop_flip(pixels, (side, side), padding, torch.Generator().manual_seed(0))
    seen = {tuple(row.tolist()) for row in augmented}
    assert seen <= candidates and len(seen) > 5  # only legal moves, and many of them


def test_digits_splits_follow_the_paper_protocol():
    splits = load_image_splits(DataArguments(dataset_name="digits"), with_labels=True, with_test=True)
    sizes = {name: len(split) for name, split in splits.splits.items()}
    assert sizes["validation"] == pytest.approx(0.1 * (sizes["train"] + sizes["validation"]), abs=1)
    assert sum(sizes.values()) == 1797 and splits.label_names == [str(d) for d in range(10)]
    assert splits.splits["train"][0]["image"].size == (8, 8)
    with pytest.raises(ValueError, match="no label column 'digit'.*'image', 'label'"):
        load_image_splits(DataArguments(dataset_name="digits", label_column_name="digit"), with_labels=True)


def test_pretraining_and_probe_hold_out_the_same_validation_images_and_eval_subsets_span_the_classes(tmp_path):
    def pixels(split):
        return {np.asarray(image).tobytes() for image in split["image"]}

    unlabelled = load_image_splits(DataArguments(dataset_name="digits"), seed=3)  # what pretraining reads
    labelled = load_image_splits(DataArguments(dataset_name="digits"), seed=3, with_labels=True, with_test=True)
    assert pixels(unlabelled.splits["validation"]) == pixels(labelled.splits["validation"])

    digits = digits_dataset()  # a test file sorted by class, as this project's CIFAR-10 test parquet is
    digits["train"].to_parquet(str(tmp_path / "train.parquet"))
    digits["test"].sort("label").to_parquet(str(tmp_path / "test.parquet"))
    files = dict(train_file=str(tmp_path / "train.parquet"), test_file=str(tmp_path / "test.parquet"))
    subset = load_image_splits(DataArguments(**files, max_eval_samples=50), with_labels=True, with_test=True)
    assert len(subset.splits["test"]) == 50
    assert len(set(subset.splits["test"]["label"])) >= 8  # the first 50 rows would hold 2 classes


def test_bits_per_dim_is_nats_over_ln2():
    assert bits_per_dim(math.log(256)) == pytest.approx(8.0)
