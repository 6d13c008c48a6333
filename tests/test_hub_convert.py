"""Released weights: an ImageGPT folder in openai/imagegpt-* layout becomes a published IGPT repository that gives
the source model's logits and the source processor's tokens."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images
from transformers import AutoImageProcessor, AutoModelForCausalLM, ImageGPTImageProcessorPil

from hub_cards import convert_released


CLUSTERS, HEIGHT, WIDTH = 8, 6, 6


@pytest.fixture(scope="module")
def imagegpt_folder(imagegpt_pair):
    """`imagegpt_folder(folder, weights)`: a tiny ImageGPT checkpoint (conftest's, every weight random) saved like the
    released ones: config, weights ("safetensors" or "bin"), preprocessor with the palette; returns (model, processor).
    """

    def build(folder, weights: str):
        model, _ = imagegpt_pair(vocab_size=CLUSTERS + 1, n_positions=HEIGHT * WIDTH, n_embd=16, n_head=2)
        return save_released(model, folder, weights)

    return build


def save_released(model, folder, weights: str):
    """Write `model` and a seeded 8-colour palette processor into `folder` as openai/imagegpt-* are laid out."""
    config = model.config
    config.architectures = ["ImageGPTForCausalImageModeling"]
    folder.mkdir()
    config.save_pretrained(folder)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if weights == "safetensors":
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    else:  # 5.x save_pretrained writes safetensors only; the releases of 2020 were pytorch_model.bin
        torch.save(state, folder / "pytorch_model.bin")
    palette = np.random.default_rng(0).uniform(-1, 1, (CLUSTERS, 3))
    processor = ImageGPTImageProcessorPil(clusters=palette, size={"height": HEIGHT, "width": WIDTH})
    processor.save_pretrained(folder)
    return model, processor


def convert(source, output_dir, *extra: str):
    convert_released.main([
        str(source), "--repo_id", "org/igpt-s", "--output_dir", str(output_dir), "--num_samples", "0",
        "--skip_remote_code_check", *extra,
    ])


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_released_layout_converts_to_a_logits_identical_repository(tmp_path, weights, imagegpt_folder):
    source, processor = imagegpt_folder(tmp_path / "imagegpt", weights)
    convert(tmp_path / "imagegpt", tmp_path / "igpt-s", "--source_repo", "openai/imagegpt-small")

    published = tmp_path / "igpt-s"
    assert (published / "model.safetensors").is_file() and not list(published.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(published).eval()
    ours = AutoImageProcessor.from_pretrained(published)
    photo = load_sample_images().images[0][::4, ::4]  # (107, 160, 3): not square, so resizing rules matter
    input_ids = ours(photo, return_tensors="pt")["input_ids"]
    assert torch.equal(input_ids, processor(photo, return_tensors="pt")["input_ids"])
    tokens = torch.randint(0, CLUSTERS, (3, HEIGHT * WIDTH), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for inputs in (input_ids, tokens):
            expected, actual = source(inputs).logits, model(inputs).logits
            assert ((actual - expected).abs().max() / expected.abs().max()).item() <= 1e-5

    card = ModelCard.load(published / "README.md")
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert "converted from [openai/imagegpt-small](https://huggingface.co/openai/imagegpt-small)" in card.text
    assert "unconditional-image-generation" in json.loads((published / "config.json").read_text())["custom_pipelines"]


def test_conversion_errors_name_the_problem(tmp_path, imagegpt_folder):
    imagegpt_folder(tmp_path / "pickle", "bin")
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model.bin\) and --require_safetensors"):
        convert(tmp_path / "pickle", tmp_path / "out", "--require_safetensors")
    (tmp_path / "pickle" / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json: the palette"):
        convert(tmp_path / "pickle", tmp_path / "out")
    assert not (tmp_path / "out").exists()
