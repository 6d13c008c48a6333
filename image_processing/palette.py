"""Palette fitting: k-means over the RGB pixels of a dataset (Chen et al., 2020, "Context Reduction": k = 512,
pixels in [-1, 1]), returning an `IGPTImageProcessor` ready to save.

Pixels only take 256^3 values, so the data is first reduced to its distinct colours and their counts; weighted Lloyd
iterations on those are exactly k-means on every pixel, at a fraction of the cost (10.24 M CIFAR-10 pixels hold about
1 M colours). Seeding is k-means++ (scikit-learn) on a sample of the colours; the nearest-centre search of each Lloyd
step uses faiss when installed, else torch.
"""

import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .image_processing_igpt import (
    IGPTImageProcessor,
    pack_colours,
    resize_rgb,
    to_rgb_uint8,
    unpack_colours,
)


N_COLOURS = 1 << 24
FLUSH_PIXELS = 1 << 22
IMAGE_COLUMNS = ("image", "img", "pixel_values")


def fit_palette(
    images,
    n_clusters: int = 512,
    seed: int = 0,
    size: int | dict | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
    image_column: str | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    allow_fewer_clusters: bool = True,
    input_data_format: str | None = None,
    **processor_kwargs,
) -> IGPTImageProcessor:
    """Fit a k-means colour palette and return the `IGPTImageProcessor` that uses it.

    Args:
        images: a `datasets.Dataset` (image column `image_column`, by default the first of "image", "img",
            "pixel_values"), an iterable of images (PIL, arrays, tensors, encoded bytes: anything the processor
            takes), a uint8 array of pixels (N, 3), or a batch of images: numpy (N, H, W, 3) or torch (N, 3, H, W).
        n_clusters: palette size K (512 in the paper).
        seed: seeds k-means++ and every sample; the palette is a deterministic function of data and seed.
        size: if given, images are resized (as the processor will) before their pixels are counted, and the processor
            gets this size; if None, pixels are taken at their native resolution and the processor keeps its default.
        max_pixels: stop reading after this many pixels. Arrays and Datasets are read in a seeded random order in that
            case; other iterables in their own order.
        progress: show tqdm bars for reading and for the Lloyd iterations.
        max_iter, tol: Lloyd iterations stop after `max_iter` or once the relative drop in inertia is below `tol`.
        allow_fewer_clusters: when the data holds only m < n_clusters distinct colours (e.g. grayscale images), return
            a palette of exactly those m colours with a warning (no duplicated clusters); if False, raise ValueError.
        input_data_format: "channels_first" or "channels_last" for array images; by default the processor's rule
            (`image_processing_igpt.channel_axis`): numpy channels-last, torch channels-first, unless only the other
            end of the shape can hold 1, 3 or 4 channels.
        processor_kwargs: passed to `IGPTImageProcessor` (e.g. `do_center_crop`, `resample`).
    """
    _check_arguments(n_clusters=n_clusters, seed=seed, size=size, max_pixels=max_pixels, max_iter=max_iter, tol=tol)
    size_kwargs = {"size": size} if size is not None else {}
    processor = IGPTImageProcessor(**size_kwargs, **processor_kwargs)  # no palette yet: for its resize and levels
    counts = colour_counts(
        images, processor if size is not None else None, max_pixels, seed, progress, image_column, input_data_format
    )
    colours = np.flatnonzero(counts)  # (m,) distinct 24-bit colours
    if len(colours) == 0:
        raise ValueError("fit_palette got no pixels.")
    levels = processor.processed_levels()  # (3, 256)
    points = levels[np.arange(3), unpack_colours(colours)]  # (m, 3) in the processed space, [-1, 1] by default
    if len(colours) <= n_clusters:
        if len(colours) < n_clusters:
            message = f"The data holds only {len(colours)} distinct colours, fewer than n_clusters={n_clusters}"
            if not allow_fewer_clusters:
                raise ValueError(message + "; lower n_clusters or pass allow_fewer_clusters=True.")
            warnings.warn(message + f": the palette is those {len(colours)} colours.", stacklevel=2)
        centres = points.astype(np.float64)
    else:
        centres, _ = weighted_kmeans(points, counts[colours], n_clusters, seed, max_iter, tol, progress)
    centres = np.clip(centres, levels.min(), levels.max())  # centres are means of points: only rounding can leave
    return IGPTImageProcessor(clusters=centres, **size_kwargs, **processor_kwargs)


def _check_arguments(n_clusters, seed, size, max_pixels, max_iter, tol):
    """ValueError naming the argument for anything k-means could not honour (instead of a deep or silent failure)."""

    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    problems = []
    if not (is_int(n_clusters) and n_clusters >= 1):
        problems.append(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if not (is_int(seed) and seed >= 0):
        problems.append(f"seed must be an integer >= 0, got {seed!r}")
    if size is not None and not isinstance(size, dict) and not (is_int(size) and size >= 1):
        problems.append(f"size must be None, an integer >= 1 or a {{'height', 'width'}} dict, got {size!r}")
    if max_pixels is not None and not (is_int(max_pixels) and max_pixels >= 1):
        problems.append(f"max_pixels must be None or an integer >= 1, got {max_pixels!r}")
    if not (is_int(max_iter) and max_iter >= 1):
        problems.append(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool) and np.isfinite(tol) and tol >= 0):
        problems.append(f"tol must be a finite number >= 0, got {tol!r}")
    if problems:
        raise ValueError("fit_palette: " + "; ".join(problems) + ".")


# ---------------------------------------------------------------------------------------------------------------------
# Counting colours


def colour_counts(
    images, processor=None, max_pixels=None, seed=0, progress=True, image_column=None, input_data_format=None
) -> np.ndarray:
    """(2^24,) int64 histogram of the 8-bit RGB colours in `images`; `processor` (if given) resizes them first."""
    counts = np.zeros(N_COLOURS, dtype=np.int64)
    buffer, buffered, total = [], 0, 0
    bar = tqdm(desc="counting pixels", unit="px", unit_scale=True, disable=not progress)
    for pixels in _iter_pixels(images, processor, max_pixels, seed, image_column, input_data_format):  # (n, 3) uint8
        if max_pixels is not None:
            pixels = pixels[: max_pixels - total]
        buffer.append(pack_colours(pixels))
        buffered, total = buffered + len(pixels), total + len(pixels)
        bar.update(len(pixels))
        if buffered >= FLUSH_PIXELS:  # one bincount per few million pixels, not per image
            counts += np.bincount(np.concatenate(buffer), minlength=N_COLOURS)
            buffer, buffered = [], 0
        if max_pixels is not None and total >= max_pixels:
            break
    bar.close()
    if buffer:
        counts += np.bincount(np.concatenate(buffer), minlength=N_COLOURS)
    return counts


def _iter_pixels(images, processor, max_pixels, seed, image_column, input_data_format=None):
    """Yield (n, 3) uint8 RGB pixel blocks from any supported input."""
    rng = np.random.default_rng(seed)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 2:  # (N, 3) pixels
        if images.shape[1] != 3:
            raise ValueError(f"A pixel array must have shape (N, 3), got {tuple(images.shape)}.")
        pixels = to_rgb_uint8(images[None], input_data_format="channels_last")[0]  # (N, 3) uint8
        yield pixels if max_pixels is None else pixels[rng.permutation(len(pixels))]
        return
    if _is_dataset(images):
        images = _dataset_images(images, _image_column(images, image_column), max_pixels, seed)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and max_pixels is not None:
        images = images[rng.permutation(len(images))]
    for image in images:
        rgb = to_rgb_uint8(image, input_data_format)  # (H, W, 3)
        if processor is not None:
            size = processor.size
            rgb = resize_rgb(rgb, size.height, size.width, processor.resample, processor.do_center_crop)
        yield rgb.reshape(-1, 3)


def _is_dataset(images) -> bool:
    return type(images).__module__.startswith("datasets") and hasattr(images, "column_names")


def _image_column(dataset, image_column):
    if isinstance(dataset.column_names, dict):
        raise ValueError(f"Got a DatasetDict with splits {list(dataset)}: pass one split, e.g. dataset['train'].")
    candidates = [image_column] if image_column else IMAGE_COLUMNS
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise ValueError(f"No image column {candidates} in the dataset; its columns are {dataset.column_names}.")


def _dataset_images(dataset, column, max_pixels, seed, batch_size=256):
    dataset = dataset.select_columns([column])
    if max_pixels is not None:
        dataset = dataset.shuffle(seed=seed)
    for batch in dataset.iter(batch_size=batch_size):
        yield from batch[column]


# ---------------------------------------------------------------------------------------------------------------------
# Weighted k-means


def weighted_kmeans(points, weights, n_clusters, seed=0, max_iter=100, tol=1e-4, progress=True, n_seed_points=20_000):
    """Lloyd's algorithm on (m, 3) points with (m,) weights, k-means++ seeded. Returns ((K, 3) float64, inertia).

    A cluster that loses all its points keeps its centre (k-means++ seeds are distinct, so no two centres coincide).
    """
    from sklearn.cluster import kmeans_plusplus

    points = points.astype(np.float32)
    weights = weights.astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(points), min(len(points), max(n_seed_points, 20 * n_clusters)), replace=False)
    centres, _ = kmeans_plusplus(points[sample], n_clusters, sample_weight=weights[sample], random_state=seed)
    centres = centres.astype(np.float32)  # (K, 3)
    previous = np.inf
    bar = tqdm(range(max_iter), desc="k-means", disable=not progress)
    for _ in bar:
        distances, assignment = nearest_centres(points, centres)  # (m,), (m,)
        inertia = float(np.dot(distances, weights))
        mass = np.bincount(assignment, weights, minlength=n_clusters)  # (K,)
        sums = np.stack([np.bincount(assignment, weights * points[:, c], minlength=n_clusters) for c in range(3)], 1)
        alive = mass > 0
        centres[alive] = sums[alive] / mass[alive, None]
        bar.set_postfix(inertia=f"{inertia:.6g}")
        if previous - inertia <= tol * inertia:
            break
        previous = inertia
    bar.close()
    return centres.astype(np.float64), inertia


def nearest_centres(points: np.ndarray, centres: np.ndarray, chunk: int = 65536):
    """Squared distance to, and index of, the nearest centre for each point (float32; faiss if installed)."""
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatL2(points.shape[1])
        index.add(np.ascontiguousarray(centres, dtype=np.float32))
        distances, ids = index.search(np.ascontiguousarray(points, dtype=np.float32), 1)
        return distances[:, 0].astype(np.float64), ids[:, 0]
    x, c = torch.from_numpy(points), torch.from_numpy(np.asarray(centres, dtype=np.float32))
    c2 = (c * c).sum(1)  # (K,)
    distances, ids = [], []
    for block in x.split(chunk):
        d = torch.addmm(c2, block, c.T, alpha=-2) + (block * block).sum(1, keepdim=True)  # (n, K)
        best = d.min(1)
        distances.append(best.values.clamp_min(0))
        ids.append(best.indices)
    return torch.cat(distances).double().numpy(), torch.cat(ids).numpy()
