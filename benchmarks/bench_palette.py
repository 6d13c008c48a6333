"""Palette fitting: `fit_palette` on every pixel of 10,000 CIFAR-10 images (10.24 M pixels, k=512) vs scikit-learn
KMeans fitted on a 1 M-pixel random subsample, same run. Both are scored by inertia (sum of squared distances to the
nearest cluster) over all the pixels, in [-1, 1] space.

    python benchmarks/bench_palette.py [--quick] [--data_dir ../shared/data/cifar10] [--json out.json]
"""

import time
from pathlib import Path

import numpy as np
from datasets import load_dataset
from sklearn.cluster import KMeans

from common import DEFAULT_DATA_DIR, cli
from image_processing import fit_palette
from image_processing.palette import nearest_centres


def _inertia(pixels: np.ndarray, clusters: np.ndarray) -> float:
    return float(nearest_centres(pixels, clusters)[0].sum())


def run(quick: bool = False, data_dir=DEFAULT_DATA_DIR, n_images: int = 10_000, n_subsample: int = 1_000_000) -> dict:
    if quick:
        n_images, n_subsample = 1000, 100_000
    train = load_dataset("parquet", data_files=str(Path(data_dir) / "train.parquet"), split="train")
    subset = train.select(range(n_images))

    start = time.perf_counter()
    images = np.stack([np.asarray(image) for image in subset["img"]])  # (N, 32, 32, 3) uint8
    decode_s = time.perf_counter() - start
    pixels = images.reshape(-1, 3).astype(np.float32) / 127.5 - 1  # (N * 1024, 3) in [-1, 1]

    start = time.perf_counter()
    ours = fit_palette(images, n_clusters=512, seed=0, progress=False).clusters
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    ours_from_dataset = fit_palette(subset, n_clusters=512, seed=0, progress=False).clusters
    ours_dataset_s = time.perf_counter() - start

    start = time.perf_counter()
    sample = pixels[np.random.default_rng(0).choice(len(pixels), n_subsample, replace=False)]
    theirs = KMeans(n_clusters=512, random_state=0).fit(sample).cluster_centers_
    theirs_s = time.perf_counter() - start

    results = {
        "n_images": n_images,
        "n_pixels": len(pixels),
        "sklearn_subsample": n_subsample,
        "decode_s": decode_s,
        "igpt_fit_s": ours_s,
        "igpt_fit_from_dataset_s": ours_dataset_s,
        "sklearn_fit_s": theirs_s,
        "igpt_inertia": _inertia(pixels, ours),
        "sklearn_inertia": _inertia(pixels, theirs),
        "dataset_and_array_fits_identical": bool(np.array_equal(ours, ours_from_dataset)),
    }
    results["speedup"] = theirs_s / ours_s
    results["inertia_ratio"] = results["igpt_inertia"] / results["sklearn_inertia"]
    _print_table(results)
    return results


def _print_table(r):
    print(f"Palette fitting, {r['n_images']} CIFAR-10 images ({r['n_pixels'] / 1e6:.2f} M pixels), k=512")
    print(f"{'':44}{'seconds':>9}{'inertia (all pixels)':>22}")
    print(f"{'fit_palette, all pixels (uint8 array)':44}{r['igpt_fit_s']:9.1f}{r['igpt_inertia']:22.1f}")
    print(f"{'fit_palette, all pixels (datasets.Dataset)':44}{r['igpt_fit_from_dataset_s']:9.1f}")
    label = f"sklearn KMeans, {r['sklearn_subsample'] / 1e6:g} M-pixel subsample"
    print(f"{label:44}{r['sklearn_fit_s']:9.1f}{r['sklearn_inertia']:22.1f}")
    print(f"speed-up {r['speedup']:.1f}x, inertia ratio {r['inertia_ratio']:.4f} (igpt / sklearn; < 1 is better)")


if __name__ == "__main__":
    cli(run, __doc__, "1,000 images, 100 k-pixel sklearn subsample")
