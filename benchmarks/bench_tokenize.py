"""Tokenization speed: IGPTImageProcessor vs transformers' ImageGPTImageProcessorPil, same palette, same run.

CIFAR-10 images (PIL, 32x32) in batches of 256, as a training data loader sees them, plus one-image calls, as a
pipeline makes them. "cold" is the first pass with a palette never used before in the process; "steady" repeats the
pass. Tokens must be identical to transformers'.

    python benchmarks/bench_tokenize.py [--quick] [--data_dir ../shared/data/cifar10] [--json out.json]
"""

import statistics
import time
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import ImageGPTImageProcessorPil

from common import DEFAULT_DATA_DIR, cli
from image_processing import IGPTImageProcessor, fit_palette
from image_processing import image_processing_igpt


def _loaded(image):
    image.load()
    return image


def _images_per_second(processor, images, batch_size):
    start = time.perf_counter()
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    ids = [processor(batch, return_tensors="np")["input_ids"] for batch in batches]
    return len(images) / (time.perf_counter() - start), np.concatenate([np.stack(list(x)) for x in ids])


def _seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _one_image_ms(clusters, images, fresh):
    """Median ms of a one-image call, ours and transformers' interleaved (so both see the same machine load).

    fresh: every call uses a new processor with a palette never seen before (a pipeline's first call); else one
    processor per side serves every call."""
    ours, theirs = [], []
    for i, image in enumerate(images):
        palette = clusters * (1 - 1e-6 * (i + 1)) if fresh else clusters
        if fresh or i == 0:
            ours_processor = IGPTImageProcessor(clusters=palette)
            theirs_processor = ImageGPTImageProcessorPil(clusters=palette.tolist(), size={"height": 32, "width": 32})
        ours.append(_seconds(lambda: ours_processor(image, return_tensors="pt")))
        theirs.append(_seconds(lambda: theirs_processor(image, return_tensors="pt")))
    return {"igpt": 1e3 * statistics.median(ours), "transformers": 1e3 * statistics.median(theirs)}


def run(quick: bool = False, data_dir=DEFAULT_DATA_DIR, n_images: int = 2000, batch_size: int = 256) -> dict:
    n_images = 512 if quick else n_images
    train = load_dataset("parquet", data_files=str(Path(data_dir) / "train.parquet"), split="train")
    images = [_loaded(image) for image in train.select(range(n_images))["img"]]  # decoded before timing
    palette_images = train.select(range(n_images, n_images + 1000))["img"]  # fit on other images
    clusters = fit_palette(palette_images, n_clusters=512, seed=0, progress=False).clusters

    ours = IGPTImageProcessor(clusters=clusters)
    theirs = ImageGPTImageProcessorPil(clusters=clusters.tolist(), size={"height": 32, "width": 32})

    one_image_fresh = _one_image_ms(clusters, images[:20], fresh=True)
    one_image_warm = _one_image_ms(clusters, images[20:70], fresh=False)

    image_processing_igpt.colour_table.cache_clear()  # time a palette's first pass, then its steady state
    theirs_rate, theirs_ids = _images_per_second(theirs, images, batch_size)
    cold_rate, cold_ids = _images_per_second(ours, images, batch_size)
    steady_rate = max(_images_per_second(ours, images, batch_size)[0] for _ in range(3))

    results = {
        "n_images": n_images,
        "batch_size": batch_size,
        "transformers_images_per_s": theirs_rate,
        "igpt_cold_images_per_s": cold_rate,
        "igpt_steady_images_per_s": steady_rate,
        "speedup_cold": cold_rate / theirs_rate,
        "speedup_steady": steady_rate / theirs_rate,
        "token_identical": bool(np.array_equal(cold_ids, theirs_ids)),
        "token_mismatches": int((cold_ids != theirs_ids).sum()),
        "one_image_fresh_palette_ms": one_image_fresh,
        "one_image_ms": one_image_warm,
    }
    _print_table(results)
    return results


def _print_table(r):
    print(f"Tokenization, {r['n_images']} CIFAR-10 images, batches of {r['batch_size']}, K=512")
    print(f"{'':34}{'images/s':>12}{'vs transformers':>18}")
    print(f"{'transformers ImageGPT (Pil)':34}{r['transformers_images_per_s']:12.0f}{1:17.1f}x")
    print(f"{'IGPTImageProcessor, cold':34}{r['igpt_cold_images_per_s']:12.0f}{r['speedup_cold']:17.1f}x")
    print(f"{'IGPTImageProcessor, steady':34}{r['igpt_steady_images_per_s']:12.0f}{r['speedup_steady']:17.1f}x")
    print(f"token-identical: {r['token_identical']} ({r['token_mismatches']} mismatches)")
    for key, label in [("one_image_fresh_palette_ms", "one image, new palette"), ("one_image_ms", "one image")]:
        ours, theirs = r[key]["igpt"], r[key]["transformers"]
        print(f"{label + ' (median)':34}igpt {ours:6.2f} ms  transformers {theirs:6.2f} ms  ({theirs / ours:.1f}x)")


if __name__ == "__main__":
    cli(run, __doc__, "512 images instead of 2,000")
