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


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from data import ClassificationCollator, PretrainingCollator  # noqa: E402

from modeling_igpt import IGPTConfig, IGPTForImageClassification, IGPTForMaskedImageModeling  # noqa: E402


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
    collator = ClassificationCollator("bert", start_token_id=COLOURS)
    dataset = pixel_dataset(64, labels=True)
    losses, eval_loss = trainer_losses(model, collator, dataset, tmp_path, 16 // accumulation, accumulation)
    expected = math.log(3) + math.log(COLOURS)
    assert eval_loss == pytest.approx(expected, rel=0.03)
    for loss in losses:
        assert loss == pytest.approx(expected, rel=0.05)
