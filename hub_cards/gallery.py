"""The card's pictures, written to the repository's images/ folder: palette, samples, completions, what the model
sees, the probe plot of the probe run, and the widget's example inputs."""

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
    """One row per photo: the quantized photo, the prompt the pipeline keeps of it, then `per_image` completions."""
    processor = pipe.image_processor
    rows = []
    for index, photo in enumerate(photos.values()):
        original = processor.decode(processor(photo, return_tensors="pt")["input_ids"], output_type="np")[0]  # (H, W, 3)
        kept = pipe.preprocess(photo, prompt_fraction=PROMPT_FRACTION)["input_ids"].shape[1] - 1  # after the start token
        prompt = original.reshape(-1, 3).copy()  # (H*W, 3) raster order, as the tokens
        prompt[kept:] = PROMPT_GRAY
        completions = pipe(photo, num_images=per_image, prompt_fraction=PROMPT_FRACTION, seed=seed + index)
        rows += [PIL.Image.fromarray(original), PIL.Image.fromarray(prompt.reshape(original.shape)), *completions]
    processor.decode_grid(rows, nrow=per_image + 2).save(path)


def save_quantized(processor, path: Path, photos: dict[str, np.ndarray]):
    """What the model sees: each photo resized and mapped to its palette."""
    ids = processor(list(photos.values()), return_tensors="pt")["input_ids"]
    processor.decode_grid(ids, nrow=len(photos)).save(path)


def save_widget_images(folder: Path, photos: dict[str, np.ndarray]) -> list[str]:
    names = []
    for name, photo in photos.items():
        image = PIL.Image.fromarray(photo)
        image.thumbnail((256, 256))
        image.save(folder / f"{name}.png")
        names.append(f"{name}.png")
    return names


def write_images(images_dir: Path, kind: str, processor, pipe, probe: dict, options) -> dict:
    """Fill `images_dir`; returns what the card shows: {palette, gallery: [(file, caption)], widget, probe_plot}.

    `pipe` is the generation pipeline of an autoregressive model (None otherwise); `probe` the probe metrics
    (`card.read_metrics`); `options` the publish options (gallery, num_samples, num_completions, seed).
    """
    images_dir.mkdir()
    images = {"gallery": [], "widget": [], "palette": "palette.png", "probe_plot": None}
    save_palette(processor, images_dir / "palette.png")
    photos = example_images()
    for path in map(Path, options.gallery):
        shutil.copyfile(path, images_dir / path.name)
        images["gallery"].append((path.name, path.stem.replace("_", " ")))
    if kind == "autoregressive" and options.num_samples > 0 and not options.gallery:
        save_samples(pipe, images_dir / "samples.png", options.num_samples, options.seed)
        save_completions(pipe, images_dir / "completions.png", photos, options.num_completions, options.seed)
        images["gallery"] += [("samples.png", "unconditional samples"), ("completions.png", "top halves completed")]
    if kind != "classifier":
        save_quantized(processor, images_dir / "inputs.png", photos)
        images["gallery"].append(("inputs.png", f"what the model sees: {processor.n_clusters}-colour palette"))
    else:
        images["widget"] = save_widget_images(images_dir, photos)
    if probe.get("plot"):  # drawn by the probe run (examples/run_linear_probe.py), shown as it is
        shutil.copyfile(probe["plot"], images_dir / "probe.png")
        images["probe_plot"] = "probe.png"
    return images
