"""IGPTImageProcessor against the contract transformers holds its own image processors to
(tests/test_image_processing_common.py, `ImageProcessingTestMixin`), test for test, adapted to a processor whose
output is `input_ids` (B, H*W) rather than `pixel_values` (B, C, H, W).

Upstream tests that cannot apply here:
- test_slow_fast_equivalence, test_fast_is_faster_than_slow, test_save_load_fast_slow(_auto),
  test_can_compile_fast_image_processor: there is one class on the PIL backend and no torchvision "fast" twin
  (torchvision is not a dependency), so there is nothing to compare or compile.
- test_processor_can_use_legacy_annotation_format (AnnotationFormatTestMixin): detection annotations only.
"""

import inspect
import json

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor, BatchFeature

from image_processing import IGPTImageProcessor


PALETTE = np.random.default_rng(0).uniform(-1, 1, (16, 3))
PROCESSOR_DICT = {
    "clusters": PALETTE.tolist(),
    "size": {"height": 8, "width": 6},
    "do_center_crop": False,
    "resample": 3,
    "do_color_quantize": True,
}
BATCH = 5


def prepare_image_inputs(kind: str, equal_resolution: bool = False, channels: int = 3, seed: int = 0):
    """Upstream's helper: `BATCH` random images of sizes in [10, 40), as PIL images, (H, W, C) numpy arrays or
    (C, H, W) torch tensors, and the (H, W, C) uint8 arrays they hold."""
    rng = np.random.default_rng(seed)
    arrays = []
    for _ in range(BATCH):
        height, width = (30, 30) if equal_resolution else rng.integers(10, 40, 2)
        arrays.append(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))
    if kind == "pil":
        return [PIL.Image.fromarray(array) for array in arrays], arrays
    if kind == "numpy":
        return arrays, arrays
    return [torch.from_numpy(array).permute(2, 0, 1) for array in arrays], arrays


@pytest.fixture
def processor():
    return IGPTImageProcessor(**PROCESSOR_DICT)


def test_init_without_params():
    processor = IGPTImageProcessor()
    assert processor.clusters is None and processor.n_clusters is None  # a palette is fitted or loaded later
    assert (processor.size.height, processor.size.width) == (32, 32)


def test_to_json_string_holds_every_init_argument(processor):
    saved = json.loads(processor.to_json_string())
    for key, value in PROCESSOR_DICT.items():
        assert saved[key] == value, key


def test_to_json_file_round_trip(processor, tmp_path):
    processor.to_json_file(tmp_path / "processor.json")
    again = IGPTImageProcessor.from_json_file(tmp_path / "processor.json")
    assert again.to_dict() == processor.to_dict()


def test_save_pretrained_from_pretrained_round_trip(processor, tmp_path):
    saved_file = processor.save_pretrained(tmp_path)[0]
    assert isinstance(json.loads(open(saved_file).read()), dict)  # well-formed JSON (upstream's format check)
    for loaded in (IGPTImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is IGPTImageProcessor
        assert loaded.to_dict() == processor.to_dict()


def test_from_dict_and_from_pretrained_take_keyword_overrides(processor, tmp_path):
    overridden = IGPTImageProcessor.from_dict(processor.to_dict(), size={"height": 4, "width": 4}, do_center_crop=True)
    assert (overridden.size.height, overridden.size.width, overridden.do_center_crop) == (4, 4, True)
    processor.save_pretrained(tmp_path)
    loaded = IGPTImageProcessor.from_pretrained(tmp_path, clusters=PALETTE[:4])
    assert loaded.n_clusters == 4 and processor.n_clusters == 16
    image = np.zeros((8, 6, 3), np.uint8)
    assert processor(image, size={"height": 2, "width": 3})["input_ids"].shape == (1, 6)  # per call


def test_cast_dtype_device(processor):
    images, _ = prepare_image_inputs("torch")
    encoding = processor(images, return_tensors="pt")
    assert encoding["input_ids"].dtype == torch.int64 and encoding["input_ids"].device == torch.device("cpu")
    assert encoding.to(torch.float16)["input_ids"].dtype == torch.int64  # ids are never cast (BatchFeature.to)
    pixels = processor(images, do_color_quantize=False, return_tensors="pt")
    assert pixels["pixel_values"].dtype == torch.float32
    assert pixels.to(torch.float16)["pixel_values"].dtype == torch.float16
    assert pixels.to("cpu", torch.bfloat16)["pixel_values"].dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["pil", "numpy", "torch"])
def test_call_single_and_batched(processor, kind):
    images, _ = prepare_image_inputs(kind)
    single = processor(images[0], return_tensors="pt")
    batched = processor(images, return_tensors="pt")
    assert isinstance(batched, BatchFeature) and list(batched) == ["input_ids"]
    assert single["input_ids"].shape == (1, 8 * 6) and batched["input_ids"].shape == (BATCH, 8 * 6)
    for index, image in enumerate(images):  # a batch is its images, one by one
        assert torch.equal(batched["input_ids"][index], processor(image, return_tensors="pt")["input_ids"][0])


@pytest.mark.parametrize("equal_resolution", [True, False])
def test_pil_numpy_and_torch_inputs_give_the_same_ids(processor, equal_resolution):
    ids = {kind: processor(prepare_image_inputs(kind, equal_resolution)[0], return_tensors="np")["input_ids"]
           for kind in ("pil", "numpy", "torch")}  # fmt: skip
    assert np.array_equal(ids["pil"], ids["numpy"]) and np.array_equal(ids["pil"], ids["torch"])
    assert ids["pil"].min() >= 0 and ids["pil"].max() < len(PALETTE)
    if equal_resolution:  # one (B, H, W, C) array or (B, C, H, W) tensor is a batch too
        arrays = np.stack(prepare_image_inputs("numpy", True)[0])
        assert np.array_equal(processor(arrays, return_tensors="np")["input_ids"], ids["pil"])
        tensors = torch.stack(prepare_image_inputs("torch", True)[0])
        assert np.array_equal(processor(tensors, return_tensors="np")["input_ids"], ids["pil"])


def test_call_numpy_4_channels(processor):
    """RGBA arrays (upstream: an arbitrary channel count) are composited onto white, like PIL RGBA images."""
    images, arrays = prepare_image_inputs("numpy", channels=4)
    ids = processor(images, input_data_format="channels_last", return_tensors="np")["input_ids"]
    as_pil = processor([PIL.Image.fromarray(array, mode="RGBA") for array in arrays], return_tensors="np")["input_ids"]
    assert ids.shape == (BATCH, 8 * 6) and np.array_equal(ids, as_pil)


def test_preprocess_arguments_unknown_keywords_are_refused_by_name(processor):
    """Upstream expects a warning naming an unknown keyword; this processor raises instead (a keyword it does not use
    must not vanish)."""
    images, _ = prepare_image_inputs("pil")
    with pytest.raises(TypeError, match="extra_argument"):
        processor(images, extra_argument=True)


def test_unknown_constructor_arguments_are_refused_by_name(tmp_path):
    """transformers would keep `do_centre_crop=False` as an unused attribute (and save it): a silent no-op."""
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['do_centre_crop'\]"):
        IGPTImageProcessor(clusters=PALETTE, do_centre_crop=False)
    from image_processing import fit_palette

    with pytest.raises(TypeError, match="do_centre_crop"):
        fit_palette(np.zeros((2, 4, 4, 3), np.uint8), n_clusters=2, progress=False, do_centre_crop=False)
    saved = IGPTImageProcessor(**PROCESSOR_DICT)
    saved.save_pretrained(tmp_path)  # what a saved config says about itself is not an argument
    assert IGPTImageProcessor.from_pretrained(tmp_path).to_dict() == saved.to_dict()


def test_call_signature_and_declared_keywords(processor):
    call = inspect.signature(IGPTImageProcessor.__call__)
    assert list(call.parameters)[:2] == ["self", "images"]
    declared = set(IGPTImageProcessor.valid_kwargs.__annotations__)
    assert {"clusters", "do_color_quantize", "size", "do_resize", "do_rescale", "do_normalize", "resample",
            "input_data_format", "return_tensors"} <= declared  # fmt: skip
    image = np.zeros((8, 6, 3), np.uint8)
    for keyword, value, key in [("do_color_quantize", False, "pixel_values"), ("clusters", PALETTE[:2], "input_ids"),
                                ("do_resize", False, "input_ids"), ("do_center_crop", True, "input_ids"),
                                ("resample", 0, "input_ids")]:  # fmt: skip
        assert list(processor(image, **{keyword: value})) == [key], keyword
