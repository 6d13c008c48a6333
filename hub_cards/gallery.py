"""The card's pictures, written to the repository's images/ folder: palette, samples, completions, what the model
sees, the probe plot of the probe run, and the widget's example inputs.

Images and tokens go through the checkpoint's `ImageTokenizer` (palette colours, or a VQ-VAE's codes): what the model
sees is the photo mapped to the palette, or the VQ-VAE's reconstruction of it from its codes."""

import shutil
from pathlib import Path

import numpy as np
import PIL.Image


PROMPT_FRACTION = 0.5  # completions keep the top half, as in the paper's figures
PROMPT_GRAY = 128  # what stands in for the rows the model did not see


def example_images() -> dict[str, np.ndarray]:
    """Two photographs that ship with scikit-learn, as (H, W, 3) uint8."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    return {Path(name).stem: image for name, image in zip(photos.filenames, photos.images)}


def save_palette(processor, path: Path, swatch: int = 16, per_row: int = 32):
    """The palette as a grid of colour swatches, in cluster-id order."""
    rgb = processor.palette_rgb()  # (K, 3) uint8
    rows = -(-len(rgb) // per_row)
    padded = np.concatenate([rgb, np.full((rows * per_row - len(rgb), 3), 255, np.uint8)])
    grid = padded.reshape(rows, per_row, 3).repeat(swatch, 0).repeat(swatch, 1)  # (rows*s, per_row*s, 3)
    PIL.Image.fromarray(grid).save(path)


def save_samples(pipe, path: Path, num_samples: int, seed: int):
    images = pipe(num_images=num_samples, seed=seed)
    pipe.image_processor.decode_grid(images, nrow=min(8, num_samples)).save(path)


def save_completions(pipe, path: Path, photos: dict[str, np.ndarray], per_image: int, seed: int):
    """One row per photo: what the model sees of it, the prompt the pipeline keeps of that, then `per_image`
    completions."""
    tokenizer = pipe.image_tokenizer
    grid_height, grid_width = tokenizer.grid_size
    rows = []
    for index, photo in enumerate(photos.values()):
        original = np.asarray(tokenizer.decode(tokenizer([photo]))[0])  # (H, W, 3)
        kept = pipe.preprocess(photo, prompt_fraction=PROMPT_FRACTION)["input_ids"].shape[1] - 1  # after the start token
        kept_rows = kept // grid_width * original.shape[0] // grid_height  # pixel rows of the kept token rows
        prompt = original.copy()
        prompt[kept_rows:] = PROMPT_GRAY
        completions = pipe(photo, num_images=per_image, prompt_fraction=PROMPT_FRACTION, seed=seed + index)
        rows += [PIL.Image.fromarray(original), PIL.Image.fromarray(prompt), *completions]
    pipe.image_processor.decode_grid(rows, nrow=per_image + 2).save(path)


def save_model_view(tokenizer, path: Path, photos: dict[str, np.ndarray]):
    """What the model sees: each photo resized and mapped to its palette, or rebuilt from its VQ-VAE codes."""
    tokenizer.decode_grid(tokenizer(list(photos.values())), nrow=len(photos)).save(path)


def model_view_caption(tokenizer) -> str:
    if tokenizer.vqvae is None:
        return f"what the model sees: {tokenizer.num_tokens}-colour palette"
    height, width = tokenizer.grid_size
    return f"what the model sees: the VQ-VAE's reconstruction from {height}x{width} of its {tokenizer.num_tokens} codes"


def save_widget_images(folder: Path, photos: dict[str, np.ndarray]) -> list[str]:
    names = []
    for name, photo in photos.items():
        image = PIL.Image.fromarray(photo)
        image.thumbnail((256, 256))
        image.save(folder / f"{name}.png")
        names.append(f"{name}.png")
    return names


def write_images(images_dir: Path, kind: str, tokenizer, pipe, probe: dict, options) -> dict:
    """Fill `images_dir`; returns what the card shows: {palette (None for VQ-VAE codes), gallery: [(file, caption)],
    widget, probe_plot}.

    `tokenizer` is the checkpoint's ImageTokenizer; `pipe` the generation pipeline of an autoregressive model (None
    otherwise); `probe` the probe metrics (`card.read_metrics`); `options` the publish options (gallery, num_samples,
    num_completions, seed).
    """
    images_dir.mkdir()
    images = {"gallery": [], "widget": [], "palette": None, "probe_plot": None}
    if tokenizer.vqvae is None:
        save_palette(tokenizer.processor, images_dir / "palette.png")
        images["palette"] = "palette.png"
    photos = example_images()
    for path in map(Path, options.gallery):
        shutil.copyfile(path, images_dir / path.name)
        images["gallery"].append((path.name, path.stem.replace("_", " ")))
    if kind == "autoregressive" and options.num_samples > 0 and not options.gallery:
        save_samples(pipe, images_dir / "samples.png", options.num_samples, options.seed)
        save_completions(pipe, images_dir / "completions.png", photos, options.num_completions, options.seed)
        images["gallery"] += [("samples.png", "unconditional samples"), ("completions.png", "top halves completed")]
    if kind != "classifier":
        save_model_view(tokenizer, images_dir / "inputs.png", photos)
        images["gallery"].append(("inputs.png", model_view_caption(tokenizer)))
    else:
        images["widget"] = save_widget_images(images_dir, photos)
    if probe.get("plot"):  # drawn by the probe run (examples/run_linear_probe.py), shown as it is
        shutil.copyfile(probe["plot"], images_dir / "probe.png")
        images["probe_plot"] = "probe.png"
    return images
