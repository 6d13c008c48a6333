"""A prior on VQ-VAE codes served by the Inference Endpoints handler and the Space app.

The repository folder is written as `hub_cards.publish` writes it (`write_repository`: model, processor without a
palette, generation pipeline code, the VQ-VAE in `vqvae/`; then handler.py). The handler runs as an endpoint runs it,
in a Python that cannot import this package (`hub_cards.validation.run_python`); its answers are compared with this
package's ImageTokenizer and model on the same weights: features from the VQ-VAE's codes, pictures of the VQ-VAE
decoder's size. The Space's callbacks run on an EndpointHandler of the same folder.
"""

import base64
import io
import json
import textwrap

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from hub_cards.handler import EndpointHandler
from hub_cards.publish import write_repository
from hub_cards.space import app, write_handler
from hub_cards.validation import run_python
from modeling_igpt import IGPTForImageClassification, IGPTForMaskedImageModeling
from modeling_igpt.pipeline_igpt import IGPTImageGenerationPipeline


IMAGE_SIZE, GRID, CODES = 12, 6, 16  # tests/conftest.py's tiny_vqvae(): 12 x 12 images -> 6 x 6 codes from 16
PHOTO = Image.fromarray(load_sample_images().images[0][::8, ::8])  # 80 x 54 RGB


def encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the handler reads the very pixels the test tokenizes
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


REQUESTS = {
    "samples": {"inputs": None, "parameters": {"num_images": 2, "top_k": 8, "seed": 0}},
    "completions": {"inputs": encode(PHOTO), "parameters": {"num_images": 2, "prompt_fraction": 0.5, "seed": 1}},
}
CALL_HANDLER = textwrap.dedent("""
    import json, sys
    prior, classifier, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.insert(0, prior)
    from handler import EndpointHandler, read_image  # as an endpoint imports it: handler.py at the repository root
    handler = EndpointHandler(path=prior)
    for module in (handler.model, handler.pipeline.image_tokenizer.vqvae):  # the checkpoint's own code, vqvae/ too
        assert type(module).__module__.startswith("transformers_modules"), type(module)
    calls = {name: lambda request=request: handler(request) for name, request in requests.items()}
    # features of a generative checkpoint: the typed method the Space's neighbours tab calls (JSON asks for pictures)
    photo = read_image(requests["completions"]["inputs"])
    calls["features"] = lambda: handler.features([photo], layer=1)[0].tolist()
    calls["classifier"] = lambda: EndpointHandler(path=classifier).kind
    answers = {}
    for name, call in calls.items():
        try:
            answers[name] = call()
        except Exception as error:  # each answer on its own: one failing request does not hide the others
            answers[name] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(answers))
""")


@pytest.fixture(scope="module")
def prior(tmp_path_factory, tiny_model, random_model, tiny_vqvae_tokenizer):
    """(folder, model, tokenizer): a tiny prior on the tiny VQ-VAE's codes, written as publish.py writes it."""
    folder = tmp_path_factory.mktemp("vqvae_prior")
    model, tokenizer = random_model(tiny_model()), tiny_vqvae_tokenizer()
    write_repository(folder, model, tokenizer, "autoregressive")
    write_handler(folder)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def answers(prior, tmp_path_factory, tiny_model, tiny_vqvae_tokenizer):
    """The endpoint's answers from a Python that cannot import this package, plus what loading a classifier on VQ-VAE
    codes (no palette, a vqvae/ folder) raised."""
    classifier = tmp_path_factory.mktemp("vqvae_classifier")
    tiny_model(IGPTForImageClassification).save_pretrained(classifier)
    tiny_vqvae_tokenizer().save_pretrained(classifier)
    write_handler(classifier)
    result = run_python(CALL_HANDLER, str(prior[0]), str(classifier), json.dumps(REQUESTS),
                        hf_home=tmp_path_factory.mktemp("hf"))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def package_pipeline(prior):
    _, model, tokenizer = prior
    return IGPTImageGenerationPipeline(
        model=model, image_processor=tokenizer.processor, vqvae=tokenizer.vqvae, device=-1
    )


def test_features_are_the_probe_features_of_the_vqvae_codes(answers, prior):
    _, model, tokenizer = prior
    codes = tokenizer([PHOTO])  # (1, 36): the VQ-VAE's codes, computed here with the package's ImageTokenizer
    assert codes.shape == (1, GRID * GRID) and int(codes.max()) < CODES
    with torch.no_grad():
        expected = model.transformer.get_probe_features(codes, layers=1)[0]  # (d,)
    assert "error" not in answers["features"], answers["features"]
    assert np.allclose(answers["features"], expected.numpy(), atol=1e-5)


def test_samples_and_completions_are_vqvae_decodings_of_the_decoder_size(answers, prior):
    pipe = package_pipeline(prior)
    expected = {
        "samples": pipe(num_images=2, top_k=8, seed=0),
        "completions": pipe(PHOTO, num_images=2, prompt_fraction=0.5, seed=1),
    }
    for name, pictures in expected.items():
        assert "error" not in answers[name], answers[name]
        images = [decode(answer["image"]) for answer in answers[name]]
        assert [image.shape for image in images] == [(IMAGE_SIZE, IMAGE_SIZE, 3)] * 2, name  # the decoder's 12 x 12
        assert all(np.array_equal(image, np.asarray(want)) for image, want in zip(images, pictures)), name


def test_a_classifier_on_vqvae_codes_is_refused_by_name(answers):
    assert "error" in answers["classifier"], answers["classifier"]
    assert answers["classifier"]["error"].startswith("ValueError: "), answers["classifier"]
    assert "image processor has no palette" in answers["classifier"]["error"]
    assert "served only as an autoregressive prior" in answers["classifier"]["error"]


# --- The Space app ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(prior):
    return app.Demo(EndpointHandler(str(prior[0])), "tiny-vq")


def test_space_preview_is_the_vqvae_reconstruction(demo, prior):
    tokenizer = prior[2]
    expected = tokenizer.decode(tokenizer([PHOTO]))[0]  # the package's VQ-VAE: codes -> decoder pictures
    preview = demo.quantized(PHOTO)
    assert preview.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert np.array_equal(np.asarray(preview), np.asarray(expected))


def test_space_completes_rows_of_codes_beside_the_labelled_reconstruction(demo, tmp_path):
    path = tmp_path / "photo.png"
    PHOTO.save(path)
    progress = []
    shown = demo.complete(str(path), 2, 2, 1.0, 0, 0, progress=lambda fraction, desc: progress.append((fraction, desc)))
    captions = [caption for _, caption in shown]
    assert captions == ["original (VQ-VAE reconstruction)", "top 2 of 6 code rows kept", "completion 1", "completion 2"]
    original, prompt = (np.asarray(image) for image, _ in shown[:2])
    scale = original.shape[0] // IMAGE_SIZE  # enlarge() upscales by a whole factor
    kept = 2 * (IMAGE_SIZE // GRID) * scale  # 2 code rows = 4 pixel rows of the decoder's picture
    assert np.array_equal(prompt[:kept], original[:kept]) and (prompt[kept:] == 128).all()
    assert [fraction for fraction, _ in progress] == [row / 4 for row in range(1, 5)]  # 4 rows of 6 codes sampled
    assert progress[-1][1] == "sampled 24 of 24 codes"
    with pytest.raises(gr.Error, match=r"rows to keep must lie in \[0, 5\] for 6 rows of codes"):
        app.shows_errors(demo.complete)(str(path), 6, 1, 1.0, 0, 0)


def test_space_describes_vqvae_codes_not_a_palette(demo):
    page = app.build_demo(demo.handler, "tiny-vq")
    texts = [block.value for block in page.blocks.values() if isinstance(block, gr.Markdown)]
    labels = [block.label for block in page.blocks.values() if isinstance(block, gr.Slider)]
    assert any("12 x 12 images as a 6 x 6 grid of VQ-VAE codes from a 16-code codebook" in text for text in texts)
    assert not any("palette" in text for text in texts)
    assert "Rows of codes to keep (of 6; each is 2 pixel rows)" in labels


def test_a_palette_trunk_reconstructs_its_palette_colours(tmp_path, tiny_model, tiny_processor):
    """The other side of `EndpointHandler.reconstruct`: a trunk has no pipeline, its processor's palette is the
    tokenizer."""
    processor = tiny_processor()
    tiny_model(IGPTForMaskedImageModeling, vocab_size=9, objective="bert").save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    handler = EndpointHandler(str(tmp_path))
    expected = processor.decode(processor(PHOTO, return_tensors="pt")["input_ids"], output_type="np")[0]
    assert handler.vqvae is None and handler.grid_size == handler.image_size == (6, 6)
    assert np.array_equal(np.asarray(handler.reconstruct([PHOTO])[0]), expected)
