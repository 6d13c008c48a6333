"""Reliability of the example scripts and of Trainer runs: losses that mean what they say, runs that survive a kill
during a save, bad data and bad arguments that fail early with a message naming the cause."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments


from example_scripts import EXAMPLES, load_example
from modeling_igpt import (
    ClassificationCollator,
    IGPTConfig,
    IGPTForImageClassification,
    IGPTForMaskedImageModeling,
    PretrainingCollator,
)


ROOT = Path(__file__).resolve().parents[1]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
COLOURS = 16  # an untrained model's loss over 16 colours is ln 16 = 2.77 nats


def tiny_bert_config(**kwargs) -> IGPTConfig:
    return IGPTConfig(
        vocab_size=COLOURS + 1, max_position_embeddings=64, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
        objective="bert", **kwargs,
    )  # fmt: skip


def pixel_dataset(count: int, labels: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, COLOURS, (count, 64), generator=generator)  # (count, 8 * 8)
    return [{"pixel_ids": row, **({"labels": torch.tensor(index % 3)} if labels else {})} for index, row in enumerate(pixels)]


def trainer_losses(model, collator, dataset, tmp_path, batch_size: int, accumulation: int) -> tuple[list[float], float]:
    """Logged training losses (learning rate 0, so the model stays untrained) and the evaluation loss."""
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch_size, per_device_eval_batch_size=16,
        gradient_accumulation_steps=accumulation, learning_rate=0.0, max_steps=4, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, trainer.evaluate()["eval_loss"]


# --- 1. BERT losses under Trainer are means over the masked pixels ---------------------------------------------------


@pytest.mark.parametrize("accumulation", [1, 2])
def test_untrained_bert_loss_under_trainer_is_ln_colours_with_and_without_accumulation(tmp_path, accumulation):
    """An untrained model predicts every colour with ~1/16: its mean loss over the masked pixels is ln 16. Trainer
    divides the summed loss by `num_items_in_batch` (labels != -100), so labels must be -100 off the mask; when they
    were every pixel, the reported loss was ~0.15 x ln 16 = 0.42."""
    torch.manual_seed(0)
    model = IGPTForMaskedImageModeling(tiny_bert_config())
    collator = PretrainingCollator("bert", start_token_id=COLOURS, mask_probability=0.15)
    losses, eval_loss = trainer_losses(model, collator, pixel_dataset(64), tmp_path, 16 // accumulation, accumulation)
    assert eval_loss == pytest.approx(math.log(COLOURS), rel=0.03)
    assert len(losses) == 4
    for loss in losses:
        assert loss == pytest.approx(math.log(COLOURS), rel=0.05)


def test_bert_collator_masks_labels_off_the_mask():
    pixels = torch.randint(0, COLOURS, (64, 64), generator=torch.Generator().manual_seed(1))
    collator = PretrainingCollator("bert", COLOURS, mask_probability=0.15, generator=torch.Generator().manual_seed(0))
    batch = collator([{"pixel_ids": row} for row in pixels])
    mask = batch["bool_masked_pos"]
    assert torch.equal(batch["input_ids"], pixels)
    assert torch.equal(batch["labels"][mask], pixels[mask]) and (batch["labels"][~mask] == -100).all()
    assert mask.float().mean().item() == pytest.approx(0.15, abs=0.02)  # 4,096 draws


def test_masked_model_refuses_labels_off_the_mask_when_trainer_counts_items():
    model = IGPTForMaskedImageModeling(tiny_bert_config()).eval()
    pixels = torch.randint(0, COLOURS, (2, 64))
    mask = torch.rand(2, 64) < 0.15
    with pytest.raises(ValueError, match="labels must be -100 outside bool_masked_pos"):
        model(pixels, bool_masked_pos=mask, labels=pixels, num_items_in_batch=torch.tensor(128))
    # without Trainer's count, the model itself keeps only the masked labels: the mean over masked pixels
    loss = model(pixels, bool_masked_pos=mask, labels=pixels).loss
    honest = model(pixels, bool_masked_pos=mask, labels=pixels.masked_fill(~mask, -100), num_items_in_batch=mask.sum())
    assert loss.item() == pytest.approx(honest.loss.item(), rel=1e-5)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_bert_classifier_generative_loss_is_a_mean_over_masked_pixels_under_accumulation(tmp_path, accumulation):
    """An untrained classifier from a BERT checkpoint: the zero head gives L_clf = ln 3 exactly, the untrained lm head
    L_gen ~ ln 16 per masked pixel, so L_clf + L_gen ~ ln 3 + ln 16 at accumulation 1 and 2 alike (a generative loss
    left unnormalised by `num_items_in_batch` counted twice at accumulation 2)."""
    torch.manual_seed(0)
    model = IGPTForImageClassification(tiny_bert_config(num_labels=3, generative_loss_weight=1.0))
    collator = ClassificationCollator()
    dataset = pixel_dataset(64, labels=True)
    losses, eval_loss = trainer_losses(model, collator, dataset, tmp_path, 16 // accumulation, accumulation)
    expected = math.log(3) + math.log(COLOURS)
    assert eval_loss == pytest.approx(expected, rel=0.03)
    for loss in losses:
        assert loss == pytest.approx(expected, rel=0.05)


# --- 2. Resuming skips a checkpoint left incomplete by a kill during its save -----------------------------------------


DIGITS = ["--dataset_name", "digits", "--disable_tqdm", "true", "--seed", "0"]
TINY_PRETRAINING = ["--image_size", "8", "--n_clusters", "8", "--num_hidden_layers", "2", "--hidden_size", "64",
                    "--num_attention_heads", "4", "--palette_max_pixels", "20000"]  # fmt: skip

# run_pretraining killed by SIGKILL, as by the OOM killer or a pre-empted machine: "save" while checkpoint-4 is being
# written (the weights are on disk; the processor, optimizer and trainer_state.json are not), "training" right after
# optimiser step 5 (checkpoint-4 complete, step 5 lost).
KILLED = """
import os, runpy, signal, sys
import modeling_igpt
from image_processing import IGPTImageProcessor
from transformers import TrainerCallback

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if {when!r} == "save":
    save = IGPTImageProcessor.save_pretrained

    def save_or_die(self, folder, *args, **kwargs):
        if os.path.basename(os.path.normpath(folder)) == "checkpoint-4":
            die()
        return save(self, folder, *args, **kwargs)

    IGPTImageProcessor.save_pretrained = save_or_die
else:
    class DieAfterStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                die()

    class DyingTrainer(modeling_igpt.BitsPerDimTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(DieAfterStep5())

    modeling_igpt.BitsPerDimTrainer = DyingTrainer  # the Trainer run_pretraining.py imports
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""
KILL_RUN = [*DIGITS, *TINY_PRETRAINING, "--max_steps", "6", "--per_device_train_batch_size", "16",
            "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no", "--logging_steps", "1",
            "--max_train_samples", "96"]  # fmt: skip


def run_script(script: str, *args: str, expect_kill: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, script if os.path.isabs(script) else str(EXAMPLES / script)]
    result = subprocess.run([*command, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if expect_kill:
        assert result.returncode == -9, (result.returncode, result.stderr[-3000:])
    elif result.returncode:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def logged_losses(folder: Path) -> dict[int, float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted")
    run_script("run_pretraining.py", *KILL_RUN, "--output_dir", str(output))
    return output


@pytest.mark.slow
@pytest.mark.parametrize("when, resumed_from", [("save", 2), ("training", 4)])
def test_a_killed_run_resumes_from_the_last_complete_checkpoint(uninterrupted, tmp_path, when, resumed_from):
    from safetensors.torch import load_file

    killed = tmp_path / "killed"
    driver = tmp_path / "killed.py"
    driver.write_text(KILLED.format(script=str(EXAMPLES / "run_pretraining.py"), when=when))
    run_script(str(driver), *KILL_RUN, "--output_dir", str(killed), expect_kill=True)
    if when == "save":
        assert (killed / "checkpoint-4" / "model.safetensors").exists()
        assert not (killed / "checkpoint-4" / "trainer_state.json").exists()

    resumed = run_script("run_pretraining.py", *KILL_RUN, "--output_dir", str(killed), "--resume_from_checkpoint", "true")
    log = resumed.stdout + resumed.stderr
    assert ("Skipping the incomplete checkpoint" in log and "checkpoint-4" in log) == (when == "save")
    assert log.count("'loss'") == 6 - resumed_from  # only the steps after the checkpoint are trained again

    full, again = logged_losses(uninterrupted), logged_losses(killed)
    assert sorted(again) == [1, 2, 3, 4, 5, 6]
    for step in range(resumed_from + 1, 7):
        assert math.isclose(again[step], full[step], rel_tol=1e-4), (step, again[step], full[step])
    full_weights, resumed_weights = load_file(uninterrupted / "model.safetensors"), load_file(killed / "model.safetensors")
    for name, weight in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], weight, rtol=1e-4, atol=1e-6, msg=name)
    differences = [abs(again[step] - full[step]) for step in range(resumed_from + 1, 7)]
    weight_difference = max((resumed_weights[name] - weight).abs().max().item() for name, weight in full_weights.items())
    print(f"killed during {when}: resumed from step {resumed_from}, largest loss difference {max(differences):.3g}, "
          f"largest weight difference {weight_difference:.3g}")

    results = json.loads((killed / "train_results.json").read_text())
    assert (results["resumed_from_step"], results["train_steps_in_this_run"]) == (resumed_from, 6 - resumed_from)
    assert json.loads((uninterrupted / "train_results.json").read_text())["resumed_from_step"] == 0


def fake_checkpoint(folder: Path, step: int, missing: str | None = None, truncated_state: bool = False) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "preprocessor_config.json", "trainer_state.json"):
        if name != missing:
            (checkpoint / name).write_text("{}")
    if truncated_state:
        (checkpoint / "trainer_state.json").write_text('{"global_step": ')
    return checkpoint


@pytest.mark.parametrize(
    "damage, problem",
    [
        ({"missing": "trainer_state.json"}, "no trainer_state.json"),
        ({"missing": "preprocessor_config.json"}, "no preprocessor_config.json"),
        ({"missing": "model.safetensors"}, "no model weights"),
        ({"truncated_state": True}, "an unreadable trainer_state.json"),
    ],
)
def test_resume_true_skips_incomplete_checkpoints_and_a_named_one_is_refused(tmp_path, caplog, damage, problem):
    from types import SimpleNamespace

    from modeling_igpt.training import resolve_checkpoint

    complete = fake_checkpoint(tmp_path, 10)
    broken = fake_checkpoint(tmp_path, 20, **damage)
    fake_checkpoint(tmp_path, 5)
    (tmp_path / "checkpoint-30.tmp").mkdir()  # not a checkpoint name
    args = SimpleNamespace(resume_from_checkpoint="true", output_dir=str(tmp_path))
    with caplog.at_level("WARNING"):
        assert resolve_checkpoint(args) == str(complete)
    assert str(broken) in caplog.text and problem in caplog.text
    with pytest.raises(ValueError, match=f"incomplete checkpoint \\({problem}"):
        resolve_checkpoint(SimpleNamespace(resume_from_checkpoint=str(broken), output_dir=str(tmp_path)))


# --- 7. run_vqvae: misspelt config overrides, and a diverging run stops at the first non-finite loss ----------------


VQVAE_TINY = ["--image_size", "32", "--bundled_train_crops", "32", "--bundled_validation_crops", "8",
              "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--logging_steps", "1"]  # fmt: skip


def test_misspelt_config_override_names_the_key_and_the_valid_ones(tmp_path):
    run_vqvae = load_example("run_vqvae")

    with pytest.raises(ValueError, match=r"no 'codebok_size'; valid keys: latent_size, .*codebook_size"):
        run_vqvae.main([*VQVAE_TINY, "--config_overrides", "codebok_size=64", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="set image_size with --image_size"):
        run_vqvae.parse_config_overrides("image_size=64")
    with pytest.raises(ValueError, match="cannot read 'codebook_size' as key=value"):
        run_vqvae.parse_config_overrides("codebook_size")
    assert run_vqvae.parse_config_overrides("latent_size=16, codebook_size=64") == {"latent_size": 16, "codebook_size": 64}


def test_config_overrides_are_refused_for_an_existing_model(tmp_path):
    run_vqvae = load_example("run_vqvae")
    from modeling_igpt.configuration_vqvae import IGPTVQVAEConfig
    from modeling_igpt.modeling_vqvae import IGPTVQVAEModel

    IGPTVQVAEModel(IGPTVQVAEConfig(image_size=32, latent_size=16, codebook_size=64)).save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match="applies to a new model only"):
        run_vqvae.main([*VQVAE_TINY, "--model_name_or_path", str(tmp_path / "vq"), "--config_overrides", "codebook_size=8",
                        "--output_dir", str(tmp_path / "out")])  # fmt: skip


@pytest.mark.slow
def test_a_diverging_vqvae_run_stops_at_the_first_non_finite_loss_with_its_checkpoints_intact(tmp_path):
    """Learning rate 1e30: Adam's first step moves every weight by ~1e30 (still finite), the second forward pass
    overflows. Trainer alone hides the NaN loss (logging_nan_inf_filter) and saves NaN weights at every step."""
    from safetensors.torch import load_file

    from modeling_igpt import NonFiniteLossError

    run_vqvae = load_example("run_vqvae")

    with pytest.raises(NonFiniteLossError, match=r"Non-finite training loss \(nan\) at step 2"):
        run_vqvae.main([*VQVAE_TINY, "--config_overrides", "latent_size=16,codebook_size=64", "--max_steps", "6",
                        "--save_strategy", "steps", "--save_steps", "1", "--learning_rate", "1e30",
                        "--output_dir", str(tmp_path)])  # fmt: skip
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert all(torch.isfinite(weight).all() for weight in load_file(tmp_path / "checkpoint-1" / "model.safetensors").values())


def test_non_finite_weights_are_never_saved(tmp_path):
    from modeling_igpt import FiniteTrainer, NonFiniteLossError

    model = IGPTForMaskedImageModeling(tiny_bert_config())
    trainer = FiniteTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True))
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="1 tensors, first lm_head.weight"):
        trainer.save_model(str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()


# --- 5 and 8. Bad data and bad arguments fail before training, naming the cause -------------------------------------


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory) -> dict[str, Path]:
    """Digits as parquet files: good; with 'no label' (-1) rows; with undecodable bytes at row 57; with a caption."""
    import io

    import datasets
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("parquet")
    digits = load_digits()
    images = [Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8), mode="L") for image in digits.images[:200]]
    labels = digits.target[:200].tolist()

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    encoded = [png(image) for image in images]
    corrupt = encoded[:57] + [{"bytes": b"not an image", "path": None}] + encoded[58:]
    unlabelled = [-1 if row % 7 == 3 else label for row, label in enumerate(labels)]
    tables = {
        "good": ({"image": encoded, "label": labels}, features),
        "corrupt": ({"image": corrupt, "label": labels}, features),
        "unlabelled": ({"image": encoded, "label": unlabelled}, features),
        "caption": (
            {"image": encoded, "label": labels, "caption": ["a digit"] * 200},
            datasets.Features({**features, "caption": datasets.Value("string")}),
        ),
    }
    paths = {}
    for name, (columns, table_features) in tables.items():
        paths[name] = folder / f"{name}.parquet"
        datasets.Dataset.from_dict(columns, features=table_features).to_parquet(str(paths[name]))
    (folder / "a_file").write_text("not a folder")
    paths["file"] = folder / "a_file"
    return paths


@pytest.fixture
def scripts(monkeypatch):
    """The three Trainer scripts, in-process, with palette fitting and their Trainers replaced by tripwires."""
    run_image_classification = load_example("run_image_classification")
    run_pretraining = load_example("run_pretraining")
    run_vqvae = load_example("run_vqvae")

    def tripwire(*args, **kwargs):
        raise AssertionError("reached palette fitting or training despite bad input")

    monkeypatch.setattr(run_pretraining, "fit_palette", tripwire)
    monkeypatch.setattr(run_pretraining, "BitsPerDimTrainer", tripwire)
    monkeypatch.setattr(run_image_classification, "MaskEnsembleTrainer", tripwire)
    monkeypatch.setattr(run_vqvae, "FiniteTrainer", tripwire)
    return {"pretraining": run_pretraining, "classification": run_image_classification, "vqvae": run_vqvae}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained 8-colour 8x8 autoregressive model with its processor."""
    import numpy as np
    from image_processing import IGPTImageProcessor
    from modeling_igpt import IGPTForCausalImageModeling

    folder = tmp_path_factory.mktemp("checkpoint")
    clusters = np.linspace(-1, 1, 8)[:, None].repeat(3, axis=1)  # (8, 3) greys
    IGPTImageProcessor(clusters=clusters, size={"height": 8, "width": 8}).save_pretrained(folder)
    config = IGPTConfig(vocab_size=9, max_position_embeddings=64, num_hidden_layers=1, hidden_size=32, num_attention_heads=2)
    IGPTForCausalImageModeling(config).save_pretrained(folder)
    return folder


def test_a_corrupt_image_stops_the_run_at_loading_naming_split_and_row(scripts, parquet_files, tmp_path):
    for script, check in [("pretraining", "decode"), ("vqvae", "decode"), ("pretraining", "header")]:
        with pytest.raises(ValueError, match=r"1 of 200 images in the train split cannot be decoded \(rows 57\); row 57: "
                                             r"UnidentifiedImageError.*--skip_bad_images"):  # fmt: skip
            scripts[script].main(["--train_file", str(parquet_files["corrupt"]), "--image_check", check,
                                  "--output_dir", str(tmp_path)])  # fmt: skip
    from image_processing.data import DataArguments, load_image_splits

    unchecked = load_image_splits(DataArguments(train_file=str(parquet_files["corrupt"]), image_check="none"))
    assert sum(len(split) for split in unchecked.splits.values()) == 200 and unchecked.skipped_images == {}


@pytest.mark.slow
def test_skip_bad_images_trains_without_them_and_reports_the_count(parquet_files, tmp_path):
    run_pretraining = load_example("run_pretraining")

    run_pretraining.main([
        "--train_file", str(parquet_files["corrupt"]), "--skip_bad_images", "true", *TINY_PRETRAINING, "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--save_strategy", "no", "--eval_strategy", "no", "--disable_tqdm", "true",
        "--output_dir", str(tmp_path),
    ])  # fmt: skip
    results = json.loads((tmp_path / "train_results.json").read_text())
    assert results["skipped_bad_images_train"] == 1


def test_unlabelled_rows_are_named_instead_of_an_index_error(scripts, parquet_files, checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"29 of 200 train rows have labels outside the classes 0..9 in column 'label' "
                                         r"\(rows \[3, 10, 17, 24, 31\], labels \[-1, -1, -1, -1, -1\]\)"):  # fmt: skip
        scripts["classification"].main(["--train_file", str(parquet_files["unlabelled"]), "--model_name_or_path",
                                         str(checkpoint), "--output_dir", str(tmp_path)])  # fmt: skip


def test_columns_of_the_wrong_kind_are_refused(scripts, parquet_files, checkpoint, tmp_path):
    classify = ["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=r"Column 'label' holds single values \(ClassLabel\), not images"):
        scripts["classification"].main(["--train_file", str(parquet_files["good"]), "--image_column_name", "label", *classify])
    with pytest.raises(ValueError, match=r"Column 'caption' holds single values \(Value\), not images"):
        scripts["pretraining"].main(["--train_file", str(parquet_files["caption"]), "--image_column_name", "caption",
                                     "--output_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(ValueError, match=r"Column 'image' holds images or arrays \(Image\), not labels"):
        scripts["classification"].main(["--train_file", str(parquet_files["good"]), "--label_column_name", "image", *classify])
    with pytest.raises(ValueError, match=r"Column 'caption' has 1 class \(\['a digit'\]\): a classifier needs at least two"):
        scripts["classification"].main(["--train_file", str(parquet_files["caption"]), "--label_column_name", "caption", *classify])


def test_an_output_dir_that_is_a_file_is_refused(scripts, parquet_files, checkpoint):
    output = ["--output_dir", str(parquet_files["file"])]
    for script, arguments in [
        ("pretraining", ["--dataset_name", "digits"]),
        ("classification", ["--dataset_name", "digits", "--model_name_or_path", str(checkpoint)]),
        ("vqvae", []),
    ]:
        with pytest.raises(ValueError, match=r"--output_dir .*a_file is a file: give a folder"):
            scripts[script].main([*arguments, *output])


def test_a_missing_local_model_folder_is_named(scripts, tmp_path, monkeypatch):
    import huggingface_hub

    from modeling_igpt.training import check_local_folder

    missing = str(tmp_path / "no_such_model")
    output = ["--output_dir", str(tmp_path / "out")]
    for script, flag in [("pretraining", "--model_name_or_path"), ("pretraining", "--image_processor_name"),
                         ("pretraining", "--vqvae_model"), ("classification", "--model_name_or_path"),
                         ("vqvae", "--model_name_or_path")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"{flag} {missing}: no such folder"):
            scripts[script].main(["--dataset_name", "digits", flag, missing, *output])
    for script in (load_example("run_linear_probe"), load_example("run_sampling")):
        with pytest.raises(ValueError, match=f"--model_name_or_path {missing}: no such folder"):
            script.main(["--dataset_name", "digits", "--model_name_or_path", missing, *output])
    # with the Hub switched on: local-looking paths are still named, `owner/name` ids go to the Hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for path in (missing, "./runs/model", "runs/2024/model"):
        with pytest.raises(ValueError, match="no such folder.$"):
            check_local_folder(path, "--model_name_or_path")
    check_local_folder("openai/imagegpt-small", "--model_name_or_path")


def test_a_negative_generative_loss_weight_is_refused(scripts, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--generative_loss_weight must be >= 0"):
        scripts["classification"].main(["--dataset_name", "digits", "--model_name_or_path", str(checkpoint),
                                         "--generative_loss_weight", "-1", "--output_dir", str(tmp_path)])  # fmt: skip


def test_a_dataset_configuration_without_a_hub_dataset_is_refused(scripts, parquet_files, tmp_path):
    with pytest.raises(ValueError, match="--dataset_config_name applies to a Hub --dataset_name only"):
        scripts["pretraining"].main(["--train_file", str(parquet_files["good"]), "--dataset_config_name", "plain_text",
                                     "--output_dir", str(tmp_path)])  # fmt: skip


@pytest.mark.slow
def test_run_vqvae_resumes_from_the_last_complete_checkpoint_with_true(tmp_path):
    """`--resume_from_checkpoint true` reached Trainer as a folder named "true"; now it is resolved as in the other
    scripts (an incomplete newer checkpoint is skipped)."""
    run_vqvae = load_example("run_vqvae")
    common = [*VQVAE_TINY, "--config_overrides", "latent_size=16,codebook_size=64", "--save_strategy", "steps",
              "--save_steps", "1", "--output_dir", str(tmp_path)]  # fmt: skip
    run_vqvae.main([*common, "--max_steps", "2"])
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()  # as a kill during its save would leave it
    run_vqvae.main([*common, "--max_steps", "3", "--resume_from_checkpoint", "true"])
    state = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]


@pytest.mark.parametrize(
    "argv, problem",
    [(["--num_samples", "0"], "Nothing to sample"), (["--batch_size", "0"], "--batch_size and --display_scale"),
     (["--temperature", "0"], "--temperature must be positive")],
)  # fmt: skip
def test_sampling_arguments_that_would_do_nothing_or_divide_by_zero_are_refused(tmp_path, argv, problem):
    from transformers import HfArgumentParser

    SamplingArguments = load_example("run_sampling").SamplingArguments

    with pytest.raises(ValueError, match=problem):
        HfArgumentParser(SamplingArguments).parse_args_into_dataclasses(
            ["--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "out"), *argv]
        )
