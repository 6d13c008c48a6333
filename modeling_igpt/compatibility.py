"""The one rule that an Image GPT model and its tokenizer belong together.

A model reads sequences of `max_position_embeddings` tokens drawn from `vocab_size - 1` image tokens plus the start
token. A tokenizer fits it iff

    palette:  processor height x width                  == max_position_embeddings   (one token per pixel)
              n_clusters + 1                            == vocab_size
    VQ-VAE:   (height / f) x (width / f), f = its factor == max_position_embeddings   (one token per code)
              codebook_size + 1                         == vocab_size

Every script, the pipeline, the converter and publishing call `check_model_fits_tokenizer`; nothing else decides.

This file is copied to the Hugging Face Hub next to the pipeline, so it imports only the standard library. The image
processor and the VQ-VAE are read by their attributes (`size`, `n_clusters`; `config.codebook_size`,
`config.downsampling_factor`), never by their classes.
"""

import os


def _size(processor) -> tuple[int, int]:
    size = processor.size
    return (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)


def tokenizer_grid(processor, vqvae=None) -> tuple[int, int]:
    """(height, width) of the token grid the model sees: the processor's pixels, or the VQ-VAE's codes of them."""
    height, width = _size(processor)
    if vqvae is None:
        return height, width
    factor = vqvae.config.downsampling_factor
    return height // factor, width // factor


def tokenizer_num_tokens(processor, vqvae=None) -> int | None:
    """Token ids that stand for image content: palette clusters or VQ-VAE codes (None: a processor without palette)."""
    return vqvae.config.codebook_size if vqvae is not None else getattr(processor, "n_clusters", None)


def _source(path, obj) -> str:
    """" (PATH)" naming where `obj` came from, or "" when nobody said."""
    path = path if path is not None else getattr(obj, "name_or_path", None)
    return f" ({os.fspath(path)})" if path else ""


def check_model_fits_tokenizer(config, processor, vqvae=None, model_source=None, processor_source=None) -> None:
    """Raise ValueError unless `config` (an IGPTConfig) and the tokenizer (`processor`, plus `vqvae` when the model
    reads VQ-VAE codes) fit: height x width == max_position_embeddings and tokens + 1 == vocab_size.

    `model_source` / `processor_source` name where each came from (folders, files); the message names both.
    """
    model_source = _source(model_source, config)
    processor_source = _source(processor_source, processor)
    if vqvae is not None:
        processor_source += f" with the VQ-VAE{_source(None, vqvae.config)}"
    height, width = tokenizer_grid(processor, vqvae)
    num_tokens = tokenizer_num_tokens(processor, vqvae)
    what = "codes" if vqvae is not None else "colours"
    problems = []
    if num_tokens is None:
        problems.append(
            "the image processor has no palette (clusters) and no VQ-VAE was given: it cannot make token ids"
        )
    elif num_tokens + 1 != config.vocab_size:
        problems.append(
            f"vocabulary: the model has vocab_size={config.vocab_size} ({config.vocab_size - 1} {what} + 1 start "
            f"token) but the tokenizer has {num_tokens} {what} (needs vocab_size={num_tokens + 1})"
        )
    if vqvae is not None:
        image_height, image_width = _size(processor)
        factor = vqvae.config.downsampling_factor
        if image_height % factor or image_width % factor:
            problems.append(
                f"the processor's {image_height}x{image_width} images are not divisible by the VQ-VAE's "
                f"downsampling factor {factor}"
            )
    if height * width != config.max_position_embeddings:
        grid = f"{height}x{width} {'code grid' if vqvae is not None else 'images'}"
        problems.append(
            f"sequence length: the model has max_position_embeddings={config.max_position_embeddings} but the "
            f"tokenizer makes {grid} = {height * width} tokens per image"
        )
    if problems:
        raise ValueError(
            f"The model{model_source} and the image tokenizer{processor_source} do not belong together: "
            + "; ".join(problems)
            + ". A model fits its tokenizer when height x width == max_position_embeddings and clusters (or VQ-VAE "
            "codes) + 1 == vocab_size: load the processor saved with this model."
        )


__all__ = ["check_model_fits_tokenizer", "tokenizer_grid", "tokenizer_num_tokens"]
