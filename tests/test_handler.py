"""The Inference Endpoints handler, called the way an endpoint calls it: `handler.py` copied into a saved checkpoint
folder, imported from there by a Python in which this package cannot be imported (`hub_cards.validation.run_python`:
the checkpoint's own code runs), `EndpointHandler(path)` built once, then called with JSON requests. Its answers are
compared with this package's pipeline and models on the same weights and seeds.
"""

import base64
import io
import json
import re
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from hub_cards.space import write_handler
from hub_cards.validation import run_python
from modeling_igpt import IGPTForImageClassification, IGPTForMaskedImageModeling
from modeling_igpt.pipeline_igpt import IGPTImageGenerationPipeline


HEIGHT, WIDTH, CLUSTERS = 6, 6, 8  # tests/conftest.py's tiny_processor()
LABELS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def encode(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


PHOTO = Image.fromarray(load_sample_images().images[0][::8, ::8])  # 80 x 54 RGB
REQUESTS = {  # name -> (checkpoint kind, request)
    "samples": ("generative", {"inputs": None, "parameters": {"num_images": 3, "top_k": 4, "seed": 0}}),
    "completions": ("generative", {"inputs": encode(PHOTO, "JPEG"), "parameters": {"num_images": 2, "seed": 1}}),
    "gray_rgba": ("generative", {"inputs": encode(PHOTO.convert("LA")), "parameters": {"seed": 2}}),
    "data_uri": ("classifier", {"inputs": "data:image/png;base64," + encode(PHOTO)}),
    "labels": ("classifier", {"inputs": encode(PHOTO), "parameters": {"top_k": 5}}),
    "features": ("features", {"inputs": encode(PHOTO), "parameters": {"layer": 1}}),
    "default_layer": ("features", {"inputs": encode(PHOTO.convert("RGBA"))}),
    # bad requests: each answer is the ValueError's message
    "not_base64": ("generative", {"inputs": "this is not an image"}),
    "not_an_image": ("classifier", {"inputs": base64.b64encode(b"%PDF-1.4 not an image").decode()}),
    "huge": ("features", {"inputs": encode(Image.new("1", (8000, 7000)))}),
    "unknown_parameter": ("generative", {"parameters": {"num_images": 1, "max_length": 9}}),
    "too_many": ("generative", {"parameters": {"num_images": 1000}}),
    "bad_seed": ("generative", {"parameters": {"seed": "zero"}}),
    "no_image": ("classifier", {"parameters": {"top_k": 2}}),
    "bad_layer": ("features", {"inputs": encode(PHOTO), "parameters": {"layer": 7}}),
    "not_a_dict": ("features", ["inputs"]),
    "unknown_key": ("features", {"image": "..."}),
}
CALL_HANDLER = textwrap.dedent("""
    import json, sys
    folders, requests = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    handlers, answers = {}, {}
    for kind, folder in folders.items():
        sys.path.insert(0, folder)
        from handler import EndpointHandler  # as an endpoint imports it: handler.py at the repository root
        handlers[kind] = EndpointHandler(path=folder)
        sys.path.remove(folder)
        sys.modules.pop("handler")
        assert type(handlers[kind].model).__module__.startswith("transformers_modules"), type(handlers[kind].model)
    for name, (kind, request) in requests.items():
        try:
            answers[name] = handlers[kind](request)
        except ValueError as error:
            answers[name] = {"error": str(error)}
    print(json.dumps(answers))
""")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model, tiny_processor):
    """{kind: (folder, model)}: saved checkpoints of each kind with handler.py at their root."""
    root = tmp_path_factory.mktemp("endpoints")
    generative = tiny_model(vocab_size=CLUSTERS + 1)
    IGPTImageGenerationPipeline(model=generative, image_processor=tiny_processor(), device=-1).save_pretrained(
        root / "generative"
    )
    classifier = tiny_model(IGPTForImageClassification, vocab_size=CLUSTERS + 1, id2label=LABELS,
                            label2id={v: k for k, v in LABELS.items()})
    bert = tiny_model(IGPTForMaskedImageModeling, vocab_size=CLUSTERS + 1, objective="bert")
    for kind, model in (("classifier", classifier), ("features", bert)):
        model.save_pretrained(root / kind)
        tiny_processor().save_pretrained(root / kind)
    folders = {"generative": (root / "generative", generative), "classifier": (root / "classifier", classifier),
               "features": (root / "features", bert)}
    for folder, _ in folders.values():
        write_handler(folder)
    return folders


@pytest.fixture(scope="module")
def answers(checkpoints, tmp_path_factory):
    """Every request's answer (or its ValueError's message), from a Python that cannot import this package."""
    folders = json.dumps({kind: str(folder) for kind, (folder, _) in checkpoints.items()})
    result = run_python(CALL_HANDLER, folders, json.dumps(REQUESTS), hf_home=tmp_path_factory.mktemp("hf"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def package_pipeline(checkpoints, processor):
    return IGPTImageGenerationPipeline(model=checkpoints["generative"][1], image_processor=processor, device=-1)


def test_samples_are_base64_pngs_equal_to_the_package_pipeline(answers, checkpoints, tiny_processor):
    expected = package_pipeline(checkpoints, tiny_processor())(num_images=3, top_k=4, seed=0)
    images = [decode(answer["image"]) for answer in answers["samples"]]
    assert [image.shape for image in images] == [(HEIGHT, WIDTH, 3)] * 3
    assert all(np.array_equal(image, np.asarray(want)) for image, want in zip(images, expected))
    assert not all(np.array_equal(images[0], image) for image in images[1:])  # three draws, not one


def test_completions_keep_the_top_half_and_equal_the_package_pipeline(answers, checkpoints, tiny_processor):
    photo = Image.open(io.BytesIO(base64.b64decode(REQUESTS["completions"][1]["inputs"])))  # the JPEG as sent
    processor = tiny_processor()
    expected = package_pipeline(checkpoints, processor)(photo, num_images=2, seed=1)
    quantized = processor.decode(processor(photo, return_tensors="pt")["input_ids"], output_type="np")[0]
    images = [decode(answer["image"]) for answer in answers["completions"]]
    assert len(images) == 2
    for image, want in zip(images, expected):
        assert np.array_equal(image, np.asarray(want))
        assert np.array_equal(image[: HEIGHT // 2], quantized[: HEIGHT // 2])


def test_grayscale_with_alpha_is_read_as_rgb(answers):
    assert decode(answers["gray_rgba"][0]["image"]).shape == (HEIGHT, WIDTH, 3)


def test_labels_are_the_classifier_top_5(answers, checkpoints, tiny_processor):
    model = checkpoints["classifier"][1]
    with torch.no_grad():
        probabilities = model(tiny_processor()(PHOTO, return_tensors="pt")["input_ids"]).logits.softmax(-1)[0]
    scores, indices = probabilities.topk(5)
    assert [answer["label"] for answer in answers["labels"]] == [LABELS[int(index)] for index in indices]
    assert np.allclose([answer["score"] for answer in answers["labels"]], scores.numpy(), atol=1e-5)
    assert answers["data_uri"] == answers["labels"]  # a data URI is the same image; top_k defaults to 5


def test_features_are_the_probe_features(answers, checkpoints, tiny_processor):
    trunk = checkpoints["features"][1].transformer
    input_ids = tiny_processor()(PHOTO, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = trunk.get_probe_features(input_ids, layers=1)[0]
    assert answers["features"][0]["layer"] == 1
    assert np.allclose(answers["features"][0]["features"], expected.numpy(), atol=1e-5)
    assert answers["default_layer"][0]["layer"] == 1 and len(answers["default_layer"][0]["features"]) == trunk.config.hidden_size


@pytest.mark.parametrize(
    "name, message",
    [
        ("not_base64", r'"inputs" is not base64 \(20 characters'),
        ("not_an_image", "not an image file PIL can read"),
        ("huge", r"8000 x 7000 = 56.0 M pixels; the limit is 50 M"),
        ("unknown_parameter", r"Unknown parameters \['max_length'\] for this generative checkpoint"),
        ("too_many", r"num_images must be an integer in \[1, 16\], got 1000"),
        ("bad_seed", "seed must be an integer, got 'zero'"),
        ("no_image", "This classifier checkpoint needs an image"),
        ("bad_layer", r"layer must be an integer in \[0, 2\] for this 2-layer model, got 7"),
        ("not_a_dict", "A request is a JSON object"),
        ("unknown_key", r"Unknown request keys \['image'\]"),
    ],
)
def test_bad_requests_get_an_error_naming_the_problem(answers, name, message):
    assert "error" in answers[name], answers[name]
    assert re.search(message, answers[name]["error"]), answers[name]["error"]


def test_write_handler_needs_a_checkpoint_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        write_handler(tmp_path)
