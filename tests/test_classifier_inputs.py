"""The classifier reads what the image processor makes: whole images' pixel ids, start token added by the model.

transformers' own image-classification pipeline hands the processor's `input_ids` straight to the model, while the
examples' Trainer feeds the collator's batches. Both paths must give the same logits, and a processor of another
image size than the model's must be refused by the model itself (the pipeline never sees both files together).
"""

import numpy as np
import pytest
import torch
from transformers import pipeline

from image_processing import IGPTImageProcessor
from modeling_igpt import ClassificationCollator, IGPTConfig, IGPTForImageClassification, model_inputs


CLUSTERS = 8
SIDE = 4


def classifier(objective: str = "autoregressive", side: int = SIDE) -> IGPTForImageClassification:
    config = IGPTConfig(
        vocab_size=CLUSTERS + 1, max_position_embeddings=side * side, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, objective=objective, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2},
    )  # fmt: skip
    torch.manual_seed(0)
    model = IGPTForImageClassification(config).eval()
    with torch.no_grad():  # the paper zero-initialises the class head: random weights make the logits tell apart
        model.score.weight.normal_(std=1.0)
    return model


def processor(side: int = SIDE) -> IGPTImageProcessor:
    palette = np.random.default_rng(0).uniform(-1, 1, (CLUSTERS, 3))
    return IGPTImageProcessor(clusters=palette, size={"height": side, "width": side})


def photos(count: int = 3) -> list[np.ndarray]:
    return list(np.random.default_rng(1).integers(0, 256, (count, 12, 10, 3), dtype=np.uint8))


def test_the_pipeline_scores_images_as_the_training_batches_do():
    model, images = classifier(), photos()
    pixel_ids = torch.as_tensor(processor()(images, return_tensors="np")["input_ids"])  # (B, N)
    batch = ClassificationCollator()([{"pixel_ids": ids, "labels": 0} for ids in pixel_ids])
    with torch.no_grad():
        expected = model(batch["input_ids"]).logits.softmax(-1)  # what fine-tuning's evaluation scores
        trunk = model.transformer(model_inputs(pixel_ids, "autoregressive", CLUSTERS)).last_hidden_state
        assert torch.allclose(model.score(model.transformer.normed_hidden_state(trunk, 2).mean(1)).softmax(-1), expected)
    classify = pipeline("image-classification", model=model, image_processor=processor())
    for image, probabilities in zip(images, expected):
        scores = {p["label"]: p["score"] for p in classify(image, top_k=3)}
        np.testing.assert_allclose([scores[label] for label in "abc"], probabilities.numpy(), rtol=1e-5)


@pytest.mark.parametrize("objective", ["autoregressive", "bert"])
def test_a_processor_of_another_size_is_refused_by_the_classifier(objective):
    classify = pipeline("image-classification", model=classifier(objective, side=8), image_processor=processor(SIDE))
    with pytest.raises(ValueError, match="reads whole images: got 16 pixel ids per image but the model has 64 positions"):
        classify(photos(1)[0])


def test_the_start_token_in_the_input_is_refused():
    model = classifier()
    pixel_ids = torch.randint(0, CLUSTERS, (2, SIDE * SIDE))
    with pytest.raises(ValueError, match="hold the start token"):
        model(model_inputs(pixel_ids, "autoregressive", CLUSTERS))  # the old convention: the trunk's inputs
