"""IGPTImageProcessor: parity with transformers' ImageGPT processor, round trips, input handling, errors, ecosystem."""

import ast
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits, load_sample_images
from transformers import AutoImageProcessor, ImageGPTImageProcessorPil, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from image_processing import IGPTImageProcessor, make_image_grid
from image_processing import image_processing_igpt


PALETTE = np.random.default_rng(0).uniform(-1, 1, size=(64, 3))  # (K, 3) in [-1, 1]
SQUARE = {"height": 32, "width": 32}


def reference_ids(rgb: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) nearest cluster by brute force: (x - c)^2 in float64 on x / 127.5 - 1."""
    x = rgb.astype(np.float64) / 127.5 - 1
    return ((x[..., None, :] - clusters) ** 2).sum(-1).argmin(-1)


def random_images(n, height=32, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def photos():
    """The two scikit-learn sample photos (427 x 640), shrunk, plus 32 x 32 crops of them."""
    images = [PIL.Image.fromarray(image).resize((160, 107)) for image in load_sample_images().images]
    corners = [(x, y) for x in range(0, 128, 16) for y in range(0, 75, 25)]
    crops = [image.crop((x, y, x + 32, y + 32)) for image in images for x, y in corners]
    return images, crops


@pytest.fixture(scope="module")
def photo_palette(photos):
    """A k-means palette of the photos (float64 cluster means, the realistic case)."""
    from image_processing import fit_palette

    return fit_palette(photos[0], n_clusters=128, seed=0, progress=False).clusters


# --- parity with transformers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("palette", ["random", "fitted"])
def test_tokens_identical_to_transformers(photos, photo_palette, palette):
    clusters = PALETTE if palette == "random" else photo_palette
    images = photos[1] + random_images(40)  # 32 x 32 photo crops and noise: no resize involved
    ours = IGPTImageProcessor(clusters=clusters)(images, return_tensors="pt")["input_ids"]
    theirs = ImageGPTImageProcessorPil(clusters=clusters.tolist(), size=SQUARE)(images, return_tensors="pt")
    assert ours.dtype == torch.int64 and ours.shape == (len(images), 32 * 32)
    assert torch.equal(ours, theirs["input_ids"])


def test_tokens_identical_to_transformers_with_resize_and_colour_table(photos, photo_palette):
    # 96 images x 1024 pixels take the colour-table path; the photos are stretched by both processors.
    images = photos[0] * 8 + random_images(80, 48, 40)
    ours = IGPTImageProcessor(clusters=photo_palette, do_center_crop=False)
    theirs = ImageGPTImageProcessorPil(clusters=photo_palette.tolist(), size=SQUARE)
    expected = theirs(images, return_tensors="np")["input_ids"]
    assert np.array_equal(np.stack(expected), ours(images)["input_ids"])
    assert np.array_equal(np.stack(expected), ours(images)["input_ids"])  # second pass: answers from the table


def test_colour_table_matches_direct_search():
    images = random_images(80, seed=1)  # 81,920 pixels: table path
    processor = IGPTImageProcessor(clusters=PALETTE)
    batched = processor(images)["input_ids"]
    one_by_one = np.concatenate([processor(image)["input_ids"] for image in images])
    assert np.array_equal(batched, one_by_one)
    assert np.array_equal(batched, reference_ids(np.stack([np.asarray(i) for i in images]), PALETTE).reshape(80, -1))


def test_pixel_values_identical_to_transformers(photos):
    images = photos[1][:4]
    ours = IGPTImageProcessor(do_color_quantize=False)(images, return_tensors="pt")["pixel_values"]
    theirs = ImageGPTImageProcessorPil(do_color_quantize=False, size=SQUARE)(images, return_tensors="pt")
    assert ours.dtype == torch.float32 and ours.shape == (4, 3, 32, 32)
    assert torch.equal(ours, theirs["pixel_values"])
    assert ours.min() >= -1 and ours.max() <= 1


def test_loads_transformers_config_unchanged(tmp_path, photos, photo_palette):
    ImageGPTImageProcessorPil(clusters=photo_palette.tolist(), size=SQUARE).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "ImageGPTImageProcessor"
    ours = IGPTImageProcessor.from_pretrained(tmp_path)
    assert not ours.do_center_crop  # transformers stretches: kept
    assert np.array_equal(ours.clusters, photo_palette)
    theirs = ImageGPTImageProcessorPil.from_pretrained(tmp_path)
    images = photos[0] + photos[1][:3]
    assert np.array_equal(ours(images)["input_ids"], np.stack(theirs(images)["input_ids"]))


def test_loads_released_feature_extractor_config(tmp_path):
    # The layout of openai/imagegpt-* preprocessor_config.json files.
    config = {"clusters": PALETTE.tolist(), "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "ImageGPTFeatureExtractor", "resample": 2, "size": 32}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    processor = IGPTImageProcessor.from_pretrained(tmp_path)
    assert processor.size.height == processor.size.width == 32 and not processor.do_center_crop
    assert processor.n_clusters == 64 and processor.start_token_id == 64


# --- serialisation and registration -----------------------------------------------------------------------------------


def test_json_round_trip_and_auto_image_processor(tmp_path, photo_palette):
    processor = IGPTImageProcessor(clusters=torch.tensor(photo_palette), size={"height": 16, "width": 24})
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "IGPTImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_igpt.IGPTImageProcessor"}
    assert isinstance(saved["clusters"], list) and len(saved["clusters"]) == 128
    assert (tmp_path / "image_processing_igpt.py").exists()

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is IGPTImageProcessor
    assert np.array_equal(loaded.clusters, photo_palette)  # bit-exact through JSON
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.do_center_crop and (loaded.size.height, loaded.size.width) == (16, 24)


def test_hub_file_runs_alone_with_trust_remote_code(tmp_path):
    IGPTImageProcessor(clusters=PALETTE).save_pretrained(tmp_path)
    remote_class = get_class_from_dynamic_module("image_processing_igpt.IGPTImageProcessor", str(tmp_path))
    assert remote_class is not IGPTImageProcessor
    remote = remote_class.from_pretrained(tmp_path)
    images = random_images(3)
    assert np.array_equal(remote(images)["input_ids"], IGPTImageProcessor(clusters=PALETTE)(images)["input_ids"])


def test_hub_file_imports_only_allowed_modules():
    source = Path(image_processing_igpt.__file__).read_text()
    allowed = {"numpy", "PIL", "torch", "transformers", "functools", "io"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert {alias.name.split(".")[0] for alias in node.names} <= allowed
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 1 or node.module.split(".")[0] in allowed, node.module


# --- encode / decode round trip over modes, layouts, dtypes, sizes ----------------------------------------------------


def as_input(rgb: np.ndarray, kind: str):
    """An (H, W, 3) uint8 image in another form that means the same colours, and those colours."""
    gray = rgb[..., 0]
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    image = PIL.Image.fromarray(rgb)
    return {
        "RGB": (image, rgb),
        "L": (PIL.Image.fromarray(gray), gray_rgb),
        "RGBA": (image.convert("RGBA"), rgb),
        "LA": (PIL.Image.fromarray(gray).convert("LA"), gray_rgb),
        "P": (image.quantize(256), np.asarray(image.quantize(256).convert("RGB"))),
        "CMYK": (image.convert("CMYK"), np.asarray(image.convert("CMYK").convert("RGB"))),
        "I;16": (PIL.Image.fromarray(gray.astype(np.uint16) * 257), gray_rgb),
        "uint8 HWC": (rgb, rgb),
        "uint8 CHW tensor": (torch.from_numpy(rgb).permute(2, 0, 1), rgb),
        "float32 HWC": (rgb.astype(np.float32) / 255, rgb),
        "float64 CHW": (rgb.transpose(2, 0, 1) / 255.0, rgb),
        "uint8 HW": (gray, gray_rgb),
        "uint16 HWC": (rgb.astype(np.uint16) * 257, rgb),
        "bool HW": (gray > 127, np.where(gray_rgb > 127, 255, 0).astype(np.uint8)),
    }[kind]


KINDS = ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "uint8 HWC", "uint8 CHW tensor", "float32 HWC",
         "float64 CHW", "uint8 HW", "uint16 HWC", "bool HW"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
)
def test_decode_of_encode_is_projection_onto_palette(height, width, kind, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image, colours = as_input(rgb, kind)
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": height, "width": width})
    ids = processor(image, return_tensors="pt")["input_ids"]
    assert ids.shape == (1, height * width) and ids.dtype == torch.int64
    expected = reference_ids(colours, PALETTE).reshape(1, -1)  # raster order
    assert np.array_equal(ids.numpy(), expected)
    decoded = processor.decode(ids, output_type="np")
    assert np.array_equal(decoded[0], processor.palette_rgb()[expected[0]].reshape(height, width, 3))


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90), out_h=st.integers(1, 40), out_w=st.integers(1, 40),
       crop=st.booleans())
def test_any_size_resizes_to_target(height, width, out_h, out_w, crop):
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": out_h, "width": out_w}, do_center_crop=crop)
    image = random_images(1, height, width)[0]
    assert processor(image)["input_ids"].shape == (1, out_h * out_w)
    assert processor.decode(processor(image)["input_ids"])[0].size == (out_w, out_h)


def test_center_crop_keeps_the_centre_and_plain_resize_stretches():
    rgb = np.zeros((32, 96, 3), dtype=np.uint8)
    rgb[:, :32] = rgb[:, 64:] = (0, 0, 255)  # blue sides
    rgb[:, 32:64] = (255, 0, 0)  # red centre
    clusters = np.array([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])  # red, blue
    cropped = IGPTImageProcessor(clusters=clusters)(rgb)["input_ids"]
    stretched = IGPTImageProcessor(clusters=clusters, do_center_crop=False)(rgb)["input_ids"]
    assert (cropped == 0).all()
    assert (stretched == 1).any() and (stretched == 0).any()


def test_rgba_is_composited_onto_white():
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)  # fully transparent black
    processor = IGPTImageProcessor(do_color_quantize=False)
    for image in (rgba, PIL.Image.fromarray(rgba)):
        assert (processor(image)["pixel_values"] == 1).all()


def test_batch_of_mixed_inputs_and_list_shapes():
    processor = IGPTImageProcessor(clusters=PALETTE)
    batch = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert processor(batch)["input_ids"].shape == (5, 1024)
    mixed = [PIL.Image.fromarray(batch[0]), batch[1], torch.from_numpy(batch[2]).permute(2, 0, 1), batch[3, ..., 0]]
    assert processor(mixed)["input_ids"].shape == (4, 1024)


# --- channel order: one rule, never a guess ---------------------------------------------------------------------------
# numpy arrays are channels-last and torch tensors channels-first, whenever both ends of the shape could hold 1, 3 or
# 4 channels; only when one end cannot is the other taken; `input_data_format` overrides both.


@pytest.mark.parametrize("shape", [(4, 4), (3, 10), (3, 3), (1, 4), (4, 3), (3, 4)], ids=str)
def test_small_images_keep_their_channel_order(shape):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)  # (H, W, 3)
    expected = reference_ids(rgb, PALETTE).reshape(1, -1)
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": shape[0], "width": shape[1]})
    chw = rgb.transpose(2, 0, 1)
    as_read = {
        "numpy HWC": processor(rgb),
        "numpy HWC batch": processor(rgb[None]),
        "torch CHW": processor(torch.from_numpy(chw)),
        "torch CHW batch": processor(torch.from_numpy(chw)[None]),
        "numpy CHW, said": processor(chw, input_data_format="channels_first"),
        "torch HWC, said": processor(torch.from_numpy(rgb), input_data_format="channels_last"),
        "list of numpy HWC": processor([rgb, rgb]),
    }
    for name, output in as_read.items():
        ids = output["input_ids"]
        assert np.array_equal(ids[:1], expected), (name, int((ids[:1] != expected).sum()), "of", expected.size, "wrong")


def test_grayscale_tensors_and_arrays_of_three_or_four_rows_stay_grayscale():
    gray = np.random.default_rng(0).integers(0, 256, (3, 4), dtype=np.uint8)  # (H, W): both ends look like channels
    expected = reference_ids(np.repeat(gray[..., None], 3, axis=-1), PALETTE).reshape(1, -1)
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 3, "width": 4})
    for image in (gray, torch.from_numpy(gray), [gray], [torch.from_numpy(gray)]):
        assert np.array_equal(processor(image)["input_ids"], expected), type(image)


def test_channels_first_numpy_and_channels_last_tensors_are_read_when_unambiguous():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    expected = reference_ids(rgb, PALETTE).reshape(1, -1)
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 8, "width": 10})
    assert np.array_equal(processor(rgb.transpose(2, 0, 1))["input_ids"], expected)  # (3, 8, 10): 10 is no channel
    assert np.array_equal(processor(torch.from_numpy(rgb))["input_ids"], expected)  # (8, 10, 3): 8 is no channel


def test_a_wrong_input_data_format_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="channels"):
        IGPTImageProcessor(clusters=PALETTE)(np.zeros((8, 8, 3), np.uint8), input_data_format="channels_first")


# --- encoded files and empty input ------------------------------------------------------------------------------------


def png_bytes(rgb: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_bytes_and_undecoded_dataset_dicts_give_the_decoded_images_ids(tmp_path):
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    rgb = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 6, "width": 7})
    expected = processor(rgb)["input_ids"]
    PIL.Image.fromarray(rgb).save(tmp_path / "image.png")
    encoded = png_bytes(rgb)
    dataset = Dataset.from_dict({"image": [str(tmp_path / "image.png")]}, features=Features({"image": ImageFeature()}))
    undecoded = dataset.cast_column("image", ImageFeature(decode=False))[0]["image"]  # {"bytes": None, "path": ...}
    for name, image in [
        ("bytes", encoded),
        ("bytearray", bytearray(encoded)),
        ("dict with bytes", {"bytes": encoded, "path": None}),
        ("dict with path", {"bytes": None, "path": str(tmp_path / "image.png")}),
        ("datasets.Image(decode=False)", undecoded),
        ("list of dicts", [{"bytes": encoded, "path": "ignored.png"}]),
    ]:
        assert np.array_equal(processor(image)["input_ids"], expected), name
    assert processor([encoded, rgb])["input_ids"].shape == (2, 42)  # mixed with arrays


@pytest.mark.parametrize(
    "images, match",
    [
        ([], "empty list of images"),
        ((), "empty list of images"),
        ([[]], "no images"),
        (np.zeros((0, 4, 4, 3), np.uint8), "no images"),
        (b"not an image", r"Could not decode an image from 12 bytes"),
        ({"bytes": None, "path": None}, "needs 'bytes' or 'path'"),
        ([{"bytes": b"\x89PNG broken", "path": None}], "Could not decode an image"),
    ],
    ids=["empty list", "empty tuple", "nested empty list", "empty batch array", "garbage bytes", "empty dict",
         "truncated PNG"],
)
def test_empty_and_undecodable_inputs_raise_clear_errors(images, match):
    with pytest.raises(ValueError, match=match):
        IGPTImageProcessor(clusters=PALETTE)(images)


# --- decode and grids -------------------------------------------------------------------------------------------------


def test_decode_shapes_and_types():
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 4, "width": 6})
    ids = torch.randint(0, 64, (3, 24))
    images = processor.decode(ids)
    assert len(images) == 3 and images[0].mode == "RGB" and images[0].size == (6, 4)
    arrays = processor.decode(ids, output_type="np")
    assert arrays.shape == (3, 4, 6, 3) and arrays.dtype == np.uint8
    assert np.array_equal(arrays, processor.decode(ids.numpy().reshape(3, 4, 6), output_type="np"))
    assert np.array_equal(arrays[:1], processor.decode(ids[0], output_type="np"))
    assert processor.decode(ids.reshape(3, 24), height=2, width=12)[0].size == (12, 2)
    expected = np.rint(127.5 * (PALETTE[ids.numpy()] + 1)).reshape(3, 4, 6, 3)  # ImageGPT's documented inverse
    assert np.abs(arrays - expected).max() == 0


@pytest.mark.parametrize(
    "ids, match",
    [
        (torch.full((1, 1024), 64), "Token id 64 is outside the palette"),  # the start token
        (torch.full((1, 1024), -3), "Token id -3"),
        (torch.zeros(1, 1000, dtype=torch.long), "1000 tokens per image"),
        (torch.zeros(1, 1024), "must be integers"),
        (torch.zeros(2, 2, 2, 2, dtype=torch.long), "must have shape"),
    ],
)
def test_decode_rejects_bad_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        IGPTImageProcessor(clusters=PALETTE).decode(ids)


def test_grids():
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 8, "width": 8})
    ids = torch.randint(0, 64, (10, 64))
    grid = processor.decode_grid(ids, nrow=4)
    assert grid.size == (4 * 10 + 2, 3 * 10 + 2)  # 4 per row, 3 rows, 2-pixel padding
    assert np.array_equal(np.asarray(grid)[2:10, 12:20], processor.decode(ids, output_type="np")[1])
    assert processor.decode_grid(processor.decode(ids), nrow=5).size == (52, 22)
    assert make_image_grid(processor.decode(ids)[:3], nrow=8, padding=0).size == (24, 8)
    with pytest.raises(ValueError, match="one size"):
        make_image_grid(random_images(1, 8, 8) + random_images(1, 9, 8))


# --- bad palettes and images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clusters, match",
    [
        (np.zeros((8, 4)), "shape"),
        (np.zeros(3), "shape"),
        (np.zeros((0, 3)), "shape"),
        ([[0.0, 0.0], [0.0, 0.0, 0.0]], "numeric"),
        (np.full((4, 3), np.nan), "NaN"),
        (np.full((4, 3), 2.0), "range"),
        ([["a", "b", "c"]], "numeric"),
    ],
)
def test_bad_palettes_raise(clusters, match):
    with pytest.raises(ValueError, match=match):
        IGPTImageProcessor(clusters=clusters)
    with pytest.raises(ValueError, match=match):
        IGPTImageProcessor(clusters=PALETTE)(random_images(1), clusters=clusters)


@pytest.mark.parametrize(
    "image, match",
    [
        (PIL.Image.new("RGB", (0, 5)), "zero-size"),
        (np.zeros((0, 32, 3), dtype=np.uint8), "zero-size"),
        (np.zeros((32, 32, 2), dtype=np.uint8), "channels"),
        (np.zeros((5, 32, 32), dtype=np.uint8), "channels"),
        (np.zeros((2, 2, 2, 2, 2), dtype=np.uint8), "Could not make a flat list|dimensions"),
        (np.full((8, 8, 3), 1.5), r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan), "finite"),
        (np.full((8, 8, 3), 300), r"\[0, 255\]"),
    ],
)
def test_bad_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        IGPTImageProcessor(clusters=PALETTE)(image)


def test_quantizing_without_palette_raises_and_unequal_sizes_need_resize():
    with pytest.raises(ValueError, match="palette"):
        IGPTImageProcessor()(random_images(1))
    with pytest.raises(ValueError, match="different sizes"):
        IGPTImageProcessor(clusters=PALETTE, do_resize=False)(random_images(1, 8, 8) + random_images(1, 9, 8))


# --- ecosystem --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dataset():
    from datasets import Dataset, Features, Image, Value

    digits = load_digits()
    images = [PIL.Image.fromarray((image * 255 / 16).astype(np.uint8)) for image in digits.images[:40]]
    features = Features({"image": Image(), "label": Value("int64")})
    return Dataset.from_dict({"image": images, "label": digits.target[:40].tolist()}, features=features)


def test_with_transform_and_batched_map(digits_dataset):
    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 8, "width": 8})

    def transform(batch):
        return {"input_ids": processor(batch["image"], return_tensors="pt")["input_ids"], "label": batch["label"]}

    row = digits_dataset.with_transform(transform)[0]
    assert row["input_ids"].shape == (64,) and row["input_ids"].dtype == torch.int64
    mapped = digits_dataset.map(lambda batch: processor(batch["image"]), batched=True, batch_size=16)
    expected = processor(list(digits_dataset["image"]))["input_ids"]
    assert np.array_equal(np.asarray(mapped["input_ids"]), expected)
    assert np.array_equal(np.asarray(mapped.with_format("torch")[0:2]["input_ids"]), expected[:2])


def test_pipelines_with_an_igpt_model():
    from modeling_igpt import IGPTConfig, IGPTForImageClassification, IGPTModel

    processor = IGPTImageProcessor(clusters=PALETTE, size={"height": 8, "width": 8})
    config = IGPTConfig(vocab_size=processor.n_clusters + 1, max_position_embeddings=64, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, id2label={0: "cat", 1: "dog"},
                        label2id={"cat": 0, "dog": 1})
    image = random_images(1, 20, 30)[0]

    input_ids = processor(image, return_tensors="pt")["input_ids"]  # (1, 64)

    model = IGPTForImageClassification(config).eval()
    torch.nn.init.normal_(model.score.weight, generator=torch.Generator().manual_seed(0))  # the paper's is zero: 50/50
    with torch.no_grad():
        probabilities = model(input_ids).logits.softmax(-1)[0]  # (2,)
    predictions = pipeline("image-classification", model=model, image_processor=processor)(image)
    expected = sorted(zip(probabilities.tolist(), ["cat", "dog"]), reverse=True)
    assert [p["label"] for p in predictions] == [label for _, label in expected]
    assert [p["score"] for p in predictions] == pytest.approx([score for score, _ in expected], abs=1e-5)

    trunk = IGPTModel(config).eval()
    features = np.asarray(pipeline("image-feature-extraction", model=trunk, image_processor=processor)(image))
    with torch.no_grad():
        expected_features = trunk(input_ids).last_hidden_state.numpy()  # (1, 64, 32)
    np.testing.assert_allclose(features, expected_features, atol=1e-5)


def test_colour_tables_are_bounded_and_clearing_them_keeps_the_ids():
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))  # 65,536 pixels: large enough for a table
    processors = [IGPTImageProcessor(clusters=rng.uniform(-1, 1, (16, 3))) for _ in range(3)]
    before = [processor(images, return_tensors="np")["input_ids"] for processor in processors]
    tables = image_processing_igpt.colour_table.cache_info()
    assert tables.currsize == tables.maxsize == 2  # three palettes met, two tables kept
    image_processing_igpt.colour_table.cache_clear()
    assert image_processing_igpt.colour_table.cache_info().currsize == 0
    for processor, ids in zip(processors, before):
        np.testing.assert_array_equal(processor(images, return_tensors="np")["input_ids"], ids)
        np.testing.assert_array_equal(ids, reference_ids(np.stack(images), processor.clusters).reshape(64, -1))


def test_do_convert_rgb_false_is_refused_not_ignored():
    """Every image is made RGB; a request to skip that would silently not be honoured, so it is an error."""
    palette = np.random.default_rng(0).uniform(-1, 1, (8, 3))
    with pytest.raises(ValueError, match="do_convert_rgb=False is not supported"):
        IGPTImageProcessor(clusters=palette, do_convert_rgb=False)
    processor = IGPTImageProcessor(clusters=palette, size={"height": 4, "width": 4})
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="do_convert_rgb=False is not supported"):
        processor(image, do_convert_rgb=False)
    assert processor(image, do_convert_rgb=True)["input_ids"].shape == (1, 16)
