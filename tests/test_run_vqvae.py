"""End to end: examples/run_vqvae.py trains a tiny VQ-VAE on the bundled photos, saves it, and evaluates it again."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from modeling_igpt.modeling_vqvae import IGPTVQVAEModel


SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_vqvae.py"
NEW_MODEL = ["--image_size", "32", "--config_overrides", "latent_size=16,codebook_size=64"]
TINY = [*NEW_MODEL, "--bundled_validation_crops", "16"]


def run_script(*arguments):
    # One OpenMP thread: on a shared 2-core machine two threads competing with other processes run ~10x slower.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), *arguments]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_run_vqvae_trains_saves_and_reports_codebook_metrics(tmp_path):
    output_dir = tmp_path / "vqvae"
    run_script(
        *TINY,
        "--output_dir", str(output_dir),
        "--max_steps", "20",
        "--per_device_train_batch_size", "8",
        "--bundled_train_crops", "64",
        "--num_reconstructions", "6",
    )  # fmt: skip

    metrics = json.loads((output_dir / "eval_results.json").read_text())
    for name in ("eval_loss", "eval_mse", "eval_psnr", "eval_perplexity"):
        assert math.isfinite(metrics[name]), name
    assert metrics["eval_psnr"] == pytest.approx(10 * math.log10(4 / metrics["eval_mse"]))
    assert 1 <= metrics["eval_perplexity"] <= metrics["eval_codes_used"]
    assert metrics["eval_codes_used"] + metrics["eval_unused_codes"] == 64
    assert 0 <= metrics["eval_dead_codes"] <= 64

    # two rows of 6 validation images over their reconstructions: 32 px tiles with 2 px padding
    assert Image.open(output_dir / "reconstructions.png").size == (6 * 34 + 2, 2 * 34 + 2)
    model = IGPTVQVAEModel.from_pretrained(output_dir)
    assert (model.config.image_size, model.config.latent_size, model.config.codebook_size) == (32, 16, 64)
    assert (output_dir / "model.safetensors").exists() and (output_dir / "preprocessor_config.json").exists()

    # evaluating the saved model without training reproduces the final validation numbers
    run_script("--bundled_validation_crops", "16", "--model_name_or_path", str(output_dir), "--do_eval",
               "--output_dir", str(tmp_path / "again"))  # no --config_overrides: they apply to new models only
    again = json.loads((tmp_path / "again" / "eval_results.json").read_text())
    assert again["eval_mse"] == pytest.approx(metrics["eval_mse"], rel=1e-5)
    assert again["eval_codes_used"] == metrics["eval_codes_used"]


def photo_parquet(path: Path, count: int) -> Path:
    """A parquet file of `count` 40x40 crops of the bundled photos, in a column named "photo"."""
    import datasets
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    crops = [Image.fromarray(photos[i % 2][i * 7 : i * 7 + 40, i * 11 : i * 11 + 40]) for i in range(count)]
    dataset = datasets.Dataset.from_dict({"photo": crops}, features=datasets.Features({"photo": datasets.Image()}))
    dataset.to_parquet(str(path))
    return path


@pytest.mark.slow
def test_run_vqvae_reads_parquet_through_the_shared_loader(tmp_path):
    train_file = photo_parquet(tmp_path / "train.parquet", 40)
    output_dir = tmp_path / "vqvae"
    run_script(
        *TINY, "--train_file", str(train_file), "--image_column_name", "photo", "--output_dir", str(output_dir),
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--validation_split_percentage", "20",
    )  # fmt: skip
    assert math.isfinite(json.loads((output_dir / "eval_results.json").read_text())["eval_mse"])

    # a wrong column name fails before training, naming the columns the data has
    command = [sys.executable, str(SCRIPT), *TINY, "--train_file", str(train_file), "--image_column_name", "img"]
    command += ["--output_dir", str(tmp_path / "bad")]
    result = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert result.returncode != 0 and "no image column 'img'" in result.stderr and "['photo']" in result.stderr
