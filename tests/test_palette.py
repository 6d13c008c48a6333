"""fit_palette: k-means quality, determinism, input kinds, few-colour data, engines, command line."""

import json
import subprocess
import sys
import warnings

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset, DatasetDict, Features, Image
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_sample_images

from image_processing import IGPTImageProcessor, fit_palette
from image_processing.__main__ import main as fit_palette_cli
from image_processing.palette import colour_counts, nearest_centres


@pytest.fixture(scope="module")
def photos():
    """The two scikit-learn sample photos shrunk to 64 x 96 (uint8, (2, 64, 96, 3)): 12,288 pixels, many colours."""
    return np.stack([np.asarray(PIL.Image.fromarray(image).resize((96, 64))) for image in load_sample_images().images])


def png(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def inertia(pixels_uint8, clusters):
    x = pixels_uint8.reshape(-1, 3).astype(np.float32) / 127.5 - 1
    return nearest_centres(x, clusters)[0].sum()


def test_quality_matches_sklearn_kmeans(photos):
    ours = fit_palette(photos, n_clusters=32, seed=0, progress=False)
    assert isinstance(ours, IGPTImageProcessor) and ours.clusters.shape == (32, 3)
    x = photos.reshape(-1, 3).astype(np.float32) / 127.5 - 1
    sklearn = KMeans(n_clusters=32, random_state=0, n_init=1).fit(x)
    assert inertia(photos, ours.clusters) <= 1.01 * sklearn.inertia_
    assert np.abs(ours.clusters).max() <= 1


def test_deterministic_for_a_seed(photos):
    first = fit_palette(photos, n_clusters=16, seed=3, progress=False).clusters
    again = fit_palette(photos, n_clusters=16, seed=3, progress=False).clusters
    other = fit_palette(photos, n_clusters=16, seed=4, progress=False).clusters
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_every_input_kind_gives_the_same_palette(photos):
    pil = [PIL.Image.fromarray(image) for image in photos]
    dataset = Dataset.from_dict({"img": pil}, features=Features({"img": Image()}))
    palettes = [
        fit_palette(photos, n_clusters=8, progress=False),  # (N, H, W, 3) uint8
        fit_palette(photos.reshape(-1, 3), n_clusters=8, progress=False),  # (N, 3) pixels
        fit_palette(iter(pil), n_clusters=8, progress=False),  # an iterable of PIL images
        fit_palette(dataset, n_clusters=8, progress=False),  # a Dataset, column "img" found
        fit_palette(photos / 255.0, n_clusters=8, progress=False),  # float images in [0, 1]
        fit_palette([png(image) for image in photos], n_clusters=8, progress=False),  # encoded PNG files
        fit_palette(dataset.cast_column("img", Image(decode=False)), n_clusters=8, progress=False),  # undecoded
    ]
    for processor in palettes[1:]:
        assert np.array_equal(processor.clusters, palettes[0].clusters)


def test_small_channels_last_images_give_the_palette_of_their_pixels():
    """(N, 4, 4, 3) uint8 images are channels-last (numpy's convention), as in the processor: same palette as their
    pixels; torch (N, 3, 4, 4) tensors are channels-first; `input_data_format` says otherwise."""
    import torch

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    images = colours[rng.integers(0, 6, (50, 4, 4))]  # (50, 4, 4, 3): six colours
    expected = fit_palette(images.reshape(-1, 3), n_clusters=6, progress=False)
    for kind, data, layout in [
        ("numpy NHWC", images, None),
        ("list of HWC", list(images), None),
        ("torch NCHW", torch.from_numpy(images).permute(0, 3, 1, 2), None),
        ("numpy NCHW, said", images.transpose(0, 3, 1, 2), "channels_first"),
    ]:
        processor = fit_palette(data, n_clusters=6, progress=False, input_data_format=layout)
        assert np.array_equal(processor.clusters, expected.clusters), kind
    palette = {tuple(colour) for colour in fit_palette(images, n_clusters=6, progress=False).palette_rgb()}
    assert palette == {tuple(colour) for colour in colours}


def test_grayscale_digits_have_fewer_colours_than_clusters():
    digits = (load_digits().images * 255 / 16).round().astype(np.uint8)  # (1797, 8, 8), 17 gray levels
    with pytest.warns(UserWarning, match="only 17 distinct colours"):
        processor = fit_palette(digits, n_clusters=512, size=8, progress=False)
    assert processor.n_clusters == 17 and processor.start_token_id == 17
    assert len(np.unique(processor.clusters, axis=0)) == 17  # no duplicated clusters
    decoded = processor.decode(processor(list(digits[:5]))["input_ids"], output_type="np")  # (5, 8, 8, 3)
    assert np.array_equal(decoded, np.repeat(digits[:5, ..., None], 3, axis=-1))  # the palette holds every gray
    with pytest.raises(ValueError, match="allow_fewer_clusters"):
        fit_palette(digits, n_clusters=512, progress=False, allow_fewer_clusters=False)


def test_exactly_as_many_colours_as_clusters_gives_those_colours():
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    pixels = np.repeat(colours, [5, 1, 7, 2], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor = fit_palette(pixels, n_clusters=4, progress=False)
    assert np.array_equal(processor.palette_rgb()[np.lexsort(processor.palette_rgb().T)],
                          colours[np.lexsort(colours.T)])


def test_torch_search_gives_the_faiss_palette(photos, monkeypatch):
    with_faiss = fit_palette(photos, n_clusters=8, progress=False).clusters
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    without = fit_palette(photos, n_clusters=8, progress=False).clusters
    np.testing.assert_allclose(without, with_faiss, atol=1e-5)


def test_size_max_pixels_and_processor_kwargs(photos):
    processor = fit_palette(photos, n_clusters=8, size=16, do_center_crop=False, progress=False)
    assert (processor.size.height, processor.size.width) == (16, 16) and not processor.do_center_crop
    assert colour_counts(photos, max_pixels=1000, progress=False).sum() == 1000
    resized = IGPTImageProcessor(size=16)
    assert colour_counts(photos, processor=resized, progress=False).sum() == 2 * 16 * 16
    subsampled = fit_palette(photos, n_clusters=8, max_pixels=5000, progress=False)
    assert subsampled.clusters.shape == (8, 3)


def test_bad_input_raises(photos):
    with pytest.raises(ValueError, match="n_clusters"):
        fit_palette(photos, n_clusters=0, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        fit_palette(np.zeros((10, 4), dtype=np.uint8), progress=False)
    dataset = Dataset.from_dict({"label": [0, 1]})
    with pytest.raises(ValueError, match="No image column"):
        fit_palette(dataset, progress=False)
    with pytest.raises(ValueError, match="one split"):
        fit_palette(DatasetDict({"train": dataset}), progress=False)
    with pytest.raises(ValueError, match="no pixels"):
        fit_palette([], progress=False)


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"max_pixels": -5}, "max_pixels must be None or an integer >= 1, got -5"),
        ({"max_pixels": 0}, "max_pixels must be None or an integer >= 1, got 0"),
        ({"max_pixels": 2.5}, "max_pixels must be None or an integer >= 1"),
        ({"n_clusters": 2.5}, "n_clusters must be an integer >= 1, got 2.5"),
        ({"n_clusters": True}, "n_clusters must be an integer >= 1, got True"),
        ({"n_clusters": -1}, "n_clusters must be an integer >= 1"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
        ({"tol": -1}, "tol must be a finite number >= 0, got -1"),
        ({"tol": float("nan")}, "tol must be a finite number >= 0, got nan"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"size": 0}, "size|height and width"),
        ({"size": -3}, "size|height and width"),
    ],
    ids=str,
)
def test_invalid_numeric_arguments_are_refused_naming_them(photos, arguments, match):
    with pytest.raises(ValueError, match=match):
        fit_palette(photos, **{"n_clusters": 4, "progress": False, **arguments})


def test_command_line_refuses_a_negative_pixel_budget(tmp_path, photos):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    PIL.Image.fromarray(photos[0]).save(folder / "0.png")
    with pytest.raises(ValueError, match="max_pixels must be None or an integer >= 1, got -5"):
        fit_palette_cli(["--train_dir", str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"),
                         "--max_pixels", "-5", "--no_progress"])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_command_line_writes_a_processor_folder(tmp_path, photos):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for i, image in enumerate(photos):
        PIL.Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "palette"
    fit_palette_cli(["--train_dir", str(tmp_path / "images"), "--output_dir", str(out), "--n_clusters", "8",
                     "--size", "32", "--no_progress"])
    config = json.loads((out / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "IGPTImageProcessor" and len(config["clusters"]) == 8
    loaded = IGPTImageProcessor.from_pretrained(out)
    expected = fit_palette(photos, n_clusters=8, size=32, progress=False)
    assert np.array_equal(loaded.clusters, expected.clusters)


def test_command_line_runs_as_python_m_image_processing(tmp_path):
    """`python -m image_processing` is the command line; `image_processing.fit_palette` stays the function."""
    import types

    import image_processing

    assert isinstance(image_processing.fit_palette, types.FunctionType)
    result = subprocess.run([sys.executable, "-m", "image_processing", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--train_file" in result.stdout and "python -m image_processing" in result.stdout
