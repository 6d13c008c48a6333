"""Shared fixtures: the tiny IGPT models, their ImageGPT twins, token batches, palette processors and VQ-VAEs the
tests build.

Each fixture is a factory (session-scoped, so module-scoped fixtures can use it too): call it with the sizes a test
needs. Defaults: 16 colours + the start token (id 16), 6 x 6 = 36 positions, width 32, 2 layers of 4 heads; the tiny
VQ-VAE turns 12 x 12 images into 6 x 6 codes from 16, so the default prior reads its codes.
"""

import numpy as np
import pytest
import torch
from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling, ImageGPTForImageClassification

from image_processing import IGPTImageProcessor
from modeling_igpt import (
    IGPTConfig,
    IGPTForCausalImageModeling,
    IGPTForImageClassification,
    IGPTVQVAEConfig,
    IGPTVQVAEModel,
    ImageTokenizer,
)
from modeling_igpt.convert_imagegpt import copy_weights, imagegpt_to_igpt_config


CLUSTERS = 16
START = CLUSTERS  # the start token is the last id
POSITIONS = 36  # a 6 x 6 image
IMAGEGPT_CLASSES = {
    "causal": (ImageGPTForCausalImageModeling, IGPTForCausalImageModeling),
    "classify": (ImageGPTForImageClassification, IGPTForImageClassification),
}


def build_config(**overrides) -> IGPTConfig:
    fields = dict(
        vocab_size=CLUSTERS + 1, max_position_embeddings=POSITIONS, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4,
    )  # fmt: skip
    return IGPTConfig(**{**fields, **overrides})


def build_vqvae_config(**overrides) -> IGPTVQVAEConfig:
    fields = dict(image_size=12, latent_size=6, codebook_size=CLUSTERS, hidden_size=16, residual_hidden_size=8)
    return IGPTVQVAEConfig(**{**fields, **overrides})


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, norms near 1 (the paper init zeroes the heads, which would hide head bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if param.ndim == 1 else 0.0))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(**overrides)`: an IGPTConfig of the default sizes, any field overridden."""
    return build_config


@pytest.fixture(scope="session")
def tiny_model():
    """`tiny_model(model_class=IGPTForCausalImageModeling, seed=0, **config)`: the paper init under `seed`, then
    random output heads (zero-initialised logits would make every comparison tie), in eval mode."""

    def build(model_class=IGPTForCausalImageModeling, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        model = model_class(build_config(**overrides))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("lm_head.weight", "score.weight")):
                    param.normal_(0.0, 0.5)
        return model.eval()

    return build


@pytest.fixture(scope="session")
def random_model():
    """`random_model(model)`: every weight random (norms near 1), in eval mode."""
    return randomize


@pytest.fixture(scope="session")
def imagegpt_pair():
    """`imagegpt_pair(head="causal", attn_implementation="sdpa", **imagegpt_config)`: transformers' ImageGPT with random
    weights and the IGPT model converted from it, both in eval mode."""

    def build(head: str = "causal", attn_implementation: str = "sdpa", **overrides):
        source_class, target_class = IMAGEGPT_CLASSES[head]
        fields = dict(
            vocab_size=CLUSTERS + 1, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        reference = randomize(source_class(ImageGPTConfig(**{**fields, **overrides})))
        config = imagegpt_to_igpt_config(reference.config)
        ours = target_class._from_config(config, attn_implementation=attn_implementation)
        copy_weights(reference, ours)
        return reference.eval(), ours.eval()

    return build


@pytest.fixture(scope="session")
def image_tokens():
    """`image_tokens(batch, length=POSITIONS, seed=0, start=True)`: (batch, length) random colour ids, the first
    replaced by the start token unless `start=False` — the input of a next-pixel model."""

    def build(batch: int, length: int = POSITIONS, seed: int = 0, start: bool = True) -> torch.LongTensor:
        pixels = torch.randint(0, CLUSTERS, (batch, length), generator=torch.Generator().manual_seed(seed))
        if start:
            pixels[:, 0] = START
        return pixels

    return build


@pytest.fixture(scope="session")
def tiny_processor():
    """`tiny_processor(height=6, width=6, clusters=8)`: a palette processor with a seeded random palette."""

    def build(height: int = 6, width: int = 6, clusters: int = 8) -> IGPTImageProcessor:
        palette = np.random.default_rng(0).uniform(-1, 1, (clusters, 3))  # (K, 3) in [-1, 1]
        return IGPTImageProcessor(clusters=palette, size={"height": height, "width": width})

    return build


@pytest.fixture(scope="session")
def tiny_vqvae_config():
    """`tiny_vqvae_config(**overrides)`: an IGPTVQVAEConfig of 12 x 12 images -> 6 x 6 codes from 16, any field
    overridden."""
    return build_vqvae_config


@pytest.fixture(scope="session")
def tiny_vqvae():
    """`tiny_vqvae(seed=0, **config)`: an IGPTVQVAEModel initialised under `seed`, in eval mode."""

    def build(seed: int = 0, **overrides) -> IGPTVQVAEModel:
        torch.manual_seed(seed)
        return IGPTVQVAEModel(build_vqvae_config(**overrides)).eval()

    return build


@pytest.fixture(scope="session")
def tiny_vqvae_tokenizer(tiny_vqvae):
    """`tiny_vqvae_tokenizer(seed=0, **vqvae_config)`: an ImageTokenizer of VQ-VAE codes (a processor without palette at
    the VQ-VAE's input size), the tokenizer of `tiny_model()` as a prior on codes."""

    def build(seed: int = 0, **overrides) -> ImageTokenizer:
        vqvae = tiny_vqvae(seed, **overrides)
        size = vqvae.config.image_size
        processor = IGPTImageProcessor(size={"height": size, "width": size}, do_color_quantize=False)
        return ImageTokenizer(processor, vqvae)

    return build
