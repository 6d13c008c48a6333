"""Images <-> the token ids an Image GPT prior reads: palette colours (the paper at 32x32 / 48x48) or VQ-VAE codes
(96x96 / 192x192 inputs, 48x48 codes).

    images -> IGPT image processor -> nearest palette colours, or pixel_values -> IGPTVQVAEModel.encode -> ids (B, N)
    ids (B, N) -> palette colours, or IGPTVQVAEModel.decode -> PIL images

`tokenize_transform` turns an image dataset into `pixel_ids` with `datasets.Dataset.with_transform`, with the paper's
random pad-crop-flip augmentation for training splits.

This file is copied to the Hub next to the generation pipeline, so it imports only torch, transformers, PIL and its
siblings `compatibility.py` and `modeling_vqvae.py`. The image processor is read by its methods (`__call__`, `decode`,
`decode_grid`, `n_clusters`, `size`), never by its class.
"""

import os

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor

from .compatibility import check_model_fits_tokenizer, tokenizer_grid, tokenizer_num_tokens
from .modeling_vqvae import IGPTVQVAEModel


VQVAE_FOLDER = "vqvae"  # where a prior on VQ-VAE codes keeps its VQ-VAE, inside the model folder


class ImageTokenizer:
    """Images -> the prior's token ids (B, N): nearest palette colours, or VQ-VAE codes of the processor's pixels.

    With a palette (paper, 32x32 / 48x48), N is the image's pixel count and the vocabulary K clusters + 1 start
    token. With a VQ-VAE (96x96 / 192x192 inputs), the processor only resizes to the VQ-VAE's input resolution and
    N is the latent grid (48x48), with the codebook as vocabulary.
    """

    def __init__(self, processor, vqvae: IGPTVQVAEModel | None = None, source: str | None = None):
        if vqvae is None and processor.n_clusters is None:
            raise ValueError("The image processor has no palette: fit one (image_processing.fit_palette) or pass a VQ-VAE.")
        self.processor = processor
        self.vqvae = vqvae.eval() if vqvae is not None else None
        self.source = source  # the folder it was loaded from, named in errors

    @classmethod
    def from_pretrained(cls, path: str, vqvae: IGPTVQVAEModel | None = None, **kwargs) -> "ImageTokenizer":
        """The processor saved in the folder `path`, plus `vqvae` or else the VQ-VAE in `path/vqvae` when the model was
        trained on codes (a Trainer checkpoint holds the processor only: give the VQ-VAE to resume from one).
        `kwargs` go to `AutoImageProcessor.from_pretrained` (e.g. trust_remote_code=True without the package)."""
        processor = AutoImageProcessor.from_pretrained(path, **kwargs)
        saved = load_vqvae(path)
        if vqvae is not None and saved is not None and not same_weights(vqvae, saved):
            raise ValueError(
                f"{path} holds its own VQ-VAE ({VQVAE_FOLDER}/) and a different one was given: the model's codes come "
                "from the saved one; give that one, or none"
            )
        return cls(processor, vqvae if vqvae is not None else saved, source=path)

    def check_fits(self, config, model_source: str | None = None):
        """ValueError naming both sources unless the model `config` reads this tokenizer's ids (the package's one rule:
        height x width == max_position_embeddings, tokens + 1 == vocab_size)."""
        check_model_fits_tokenizer(config, self.processor, self.vqvae, model_source, self.source)

    def save_pretrained(self, path: str):
        self.processor.save_pretrained(path)
        if self.vqvae is not None:
            self.vqvae.save_pretrained(os.path.join(path, VQVAE_FOLDER))

    @property
    def num_tokens(self) -> int:
        """Token ids that stand for image content: palette clusters or VQ-VAE codes."""
        return tokenizer_num_tokens(self.processor, self.vqvae)

    @property
    def vocab_size(self) -> int:
        return self.num_tokens + 1

    @property
    def start_token_id(self) -> int:
        return self.num_tokens

    @property
    def grid_size(self) -> tuple[int, int]:
        """(height, width) of the token grid the model sees."""
        return tokenizer_grid(self.processor, self.vqvae)

    @property
    def sequence_length(self) -> int:
        height, width = self.grid_size
        return height * width

    @torch.no_grad()
    def __call__(self, images) -> torch.LongTensor:
        if self.vqvae is None:
            return self.processor(images, return_tensors="pt")["input_ids"]  # (B, H*W)
        pixel_values = self.processor(images, do_color_quantize=False, return_tensors="pt")["pixel_values"]
        return self.vqvae.encode(pixel_values.to(self.vqvae.device, self.vqvae.dtype)).cpu()  # (B, h*w)

    @torch.no_grad()
    def decode(self, token_ids: torch.LongTensor) -> list[Image.Image]:
        """Token ids (B, N) without the start token -> PIL images."""
        if self.vqvae is None:
            return self.processor.decode(token_ids, *self.grid_size)
        pixel_values = self.vqvae.decode(token_ids.to(self.vqvae.device))  # (B, 3, H, W) in [-1, 1]
        pixels = ((pixel_values.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]

    def decode_grid(self, token_ids: torch.LongTensor, nrow: int = 8) -> Image.Image:
        return self.processor.decode_grid(self.decode(token_ids), nrow=nrow)


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    """Whether two models hold the same tensors under the same names, wherever each lives (a VQ-VAE given on the GPU
    is compared with the one loaded from disk on the CPU)."""
    first_state, second_state = first.state_dict(), second.state_dict()
    return first_state.keys() == second_state.keys() and all(
        torch.equal(tensor, second_state[name].to(tensor.device)) for name, tensor in first_state.items()
    )


def load_vqvae(path: str) -> IGPTVQVAEModel | None:
    """The VQ-VAE a prior on codes keeps in the folder `path/vqvae`; None for a model on palette colours."""
    folder = os.path.join(path, VQVAE_FOLDER)
    return IGPTVQVAEModel.from_pretrained(folder) if os.path.isdir(folder) else None


def tokenize_transform(
    tokenizer: ImageTokenizer, image_column: str, label_column: str | None = None, augment_padding: int = 0
):
    """A `with_transform` function: a batch of images (and labels) -> {"pixel_ids": (B, N)[, "labels": (B,)]},
    with the paper's random pad-crop-flip when `augment_padding` > 0 (training splits only)."""

    def transform(batch):
        pixel_ids = tokenizer(batch[image_column])  # (B, N)
        if augment_padding:
            pixel_ids = random_pad_crop_flip(pixel_ids, tokenizer.grid_size, augment_padding)
        output = {"pixel_ids": pixel_ids}
        if label_column is not None:
            output["labels"] = torch.as_tensor(batch[label_column])
        return output

    return transform


def random_pad_crop_flip(
    pixel_ids: torch.LongTensor, grid_size: tuple[int, int], padding: int, generator: torch.Generator | None = None
) -> torch.LongTensor:
    """The paper's CIFAR augmentation (from Wide ResNets): reflect-pad `padding` pixels on each side, take a random
    crop of the original size, flip it horizontally with probability 1/2.

    Applied to the token grid: colour quantization acts on each pixel alone, so it commutes with these moves and this
    equals augmenting the pixels first. (B, N) -> (B, N).
    """
    height, width = grid_size
    batch = pixel_ids.shape[0]
    grid = pixel_ids.view(batch, 1, height, width).float()  # reflect padding needs floats; ids < 2^24 stay exact
    padded = F.pad(grid, (padding, padding, padding, padding), mode="reflect")  # (B, 1, H + 2p, W + 2p)
    tops = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    lefts = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    crops = []
    for image, top, left, flip in zip(padded, tops.tolist(), lefts.tolist(), flips.tolist()):
        crop = image[:, top : top + height, left : left + width]  # (1, H, W)
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops).long().view(batch, height * width)
