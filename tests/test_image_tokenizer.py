"""ImageTokenizer.from_pretrained with a VQ-VAE given beside a folder that holds its own."""

import pytest
import torch

from modeling_igpt.image_tokenizer import ImageTokenizer


def test_a_given_vqvae_must_match_the_one_the_folder_holds(tmp_path, tiny_vqvae_tokenizer, tiny_vqvae):
    tiny_vqvae_tokenizer(seed=0).save_pretrained(str(tmp_path))
    images = [torch.randint(0, 256, (12, 12, 3), dtype=torch.uint8).numpy() for _ in range(2)]
    saved = ImageTokenizer.from_pretrained(str(tmp_path))
    same = ImageTokenizer.from_pretrained(str(tmp_path), vqvae=tiny_vqvae(seed=0))
    torch.testing.assert_close(same(images), saved(images))  # the same VQ-VAE given: accepted, the same codes
    with pytest.raises(ValueError, match="holds its own VQ-VAE"):  # another one would give other codes silently
        ImageTokenizer.from_pretrained(str(tmp_path), vqvae=tiny_vqvae(seed=1))
