"""Publishing: the assembled repository, its card, validation, upload arguments, and loading it from an offline Hub cache.

The offline tests copy published folders into the Hugging Face cache layout (models--org--name/snapshots/<commit>,
refs/main) and load "org/igpt-l"-style ids with HF_HUB_OFFLINE=1 in a fresh Python: once with this package made
unimportable (the repository's own code, trust_remote_code=True), once with it (the registered classes).
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from sklearn.datasets import load_sample_images

from hub_cards import card, publish, validation
from image_processing import IGPTImageProcessor
from modeling_igpt import IGPTForCausalImageModeling, IGPTForImageClassification, IGPTForMaskedImageModeling
from test_model_tokenizer_fit import MISFITS  # the mismatched model/processor pairs, one table
from test_model_tokenizer_fit import config as fit_config
from test_model_tokenizer_fit import processor as palette_processor


CLUSTERS, HEIGHT, WIDTH = 8, 6, 6
# Shaped like examples/run_linear_probe.py's probe_results.json and Trainer's all_results.json.
PROBE = {
    "layers": [
        {"layer": 0, "C": 1.0, "validation_accuracy": 0.30, "test_accuracy": 0.31},
        {"layer": 1, "C": 0.1, "validation_accuracy": 0.60, "test_accuracy": 0.62},
        {"layer": 2, "C": 1.0, "validation_accuracy": 0.55, "test_accuracy": 0.48},
    ],
    "best_layer": 1, "best_layer_test_accuracy": 0.62,
    "low_data": [{"labels_per_class": 4, "test_accuracies": [0.2], "mean": 0.2, "std": 0.0}],
}
PRETRAINING = {"epoch": 1.0, "eval_loss": 1.7, "eval_bits_per_dim": 2.4526, "train_loss": 1.9, "train_bits_per_dim": 2.74}
CLASSIFICATION = {"eval_accuracy": 0.81, "test_accuracy": 0.79}
SECTIONS = ["## The palette", "## How to use", "## Training data and hyperparameters", "## Evaluation",
            "## Limitations", "## Citation"]


@pytest.fixture(scope="module")
def hub_model(tiny_model, random_model):
    """`hub_model(model_class, **config)`: a model of conftest's tiny_processor() (6 x 6 images in 8 colours), every
    weight random (zero-initialised heads would make every comparison trivially pass)."""

    def build(model_class, **overrides):
        sizes = dict(vocab_size=CLUSTERS + 1, max_position_embeddings=HEIGHT * WIDTH, hidden_size=16)
        return random_model(tiny_model(model_class, **sizes, num_attention_heads=2, **overrides))

    return build


def checkpoint(folder: Path, model, tokenizer) -> Path:
    """A save_pretrained folder of `model` and its tokenizer (a processor, or an ImageTokenizer with a VQ-VAE)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_json(path: Path, values: dict) -> str:
    path.write_text(json.dumps(values))
    return str(path)


def probe_run(folder: Path) -> str:
    """What examples/run_linear_probe.py leaves in its --output_dir: probe_results.json and its plot."""
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(folder / card.PROBE_PLOT)
    return write_json(folder / "probe_results.json", PROBE)


def assemble(checkpoint_dir: Path, output_dir: Path, repo_id: str, *extra: str):
    options = publish.parse_args(
        [str(checkpoint_dir), "--repo_id", repo_id, "--output_dir", str(output_dir), "--num_samples", "2",
         "--num_completions", "1", *extra]
    )
    return publish.assemble(options)


@pytest.fixture(scope="module")
def published(tmp_path_factory, hub_model, tiny_processor):
    """Published folders for an autoregressive, a BERT and a classifier checkpoint: {kind: (folder, model)}."""
    root, processor = tmp_path_factory.mktemp("published"), tiny_processor()
    autoregressive = checkpoint(root / "ar", hub_model(IGPTForCausalImageModeling), processor)
    trainer_state = {"train_batch_size": 4, "max_steps": 10, "global_step": 10, "log_history": [{"learning_rate": 3e-4}]}
    (autoregressive / "trainer_state.json").write_text(json.dumps(trainer_state))
    bert = checkpoint(root / "bert", hub_model(IGPTForMaskedImageModeling, objective="bert"), processor)
    labels = {0: "zero", 1: "one", 2: "two"}
    classifier = checkpoint(
        root / "clf", hub_model(IGPTForImageClassification, id2label=labels, label2id={v: k for k, v in labels.items()}),
        processor,
    )
    return {
        "autoregressive": assemble(
            autoregressive, root / "out-ar", "org/igpt-l", "--dataset_name", "digits", "--metrics",
            write_json(root / "pretraining.json", PRETRAINING), probe_run(root / "probe"),
        ),
        "bert": assemble(bert, root / "out-bert", "org/igpt-l-bert", "--dataset_name", "digits", "--metrics",
                         write_json(root / "bert.json", {"eval_loss": 1.5})),
        "classifier": assemble(
            classifier, root / "out-clf", "org/igpt-l-digits", "--dataset_name", "digits", "--base_model", "org/igpt-l",
            "--revision", "v1", "--metrics", write_json(root / "classification.json", CLASSIFICATION),
        ),
    }


# --- The folder and its card ------------------------------------------------------------------------------------------


def test_generative_folder_is_complete_and_validates(published):
    folder, model = published["autoregressive"]
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "configuration_igpt.py",
            "modeling_igpt.py", "generation_igpt.py", "image_processing_igpt.py", "pipeline_igpt.py",
            "compatibility.py"} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pkl"))]
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                       "AutoModelForMaskedImageModeling", "AutoModelForImageClassification"}
    assert config["custom_pipelines"]["unconditional-image-generation"]["impl"] == "pipeline_igpt.IGPTImageGenerationPipeline"
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoImageProcessor"] == "image_processing_igpt.IGPTImageProcessor"
    for image in ("palette.png", "samples.png", "completions.png", "inputs.png", "probe.png"):
        assert (folder / "images" / image).is_file(), image
    probe_plot = folder.parent / "probe" / card.PROBE_PLOT
    assert (folder / "images" / "probe.png").read_bytes() == probe_plot.read_bytes()  # the probe run's plot, as drawn
    validation.validate(folder, model, remote_code_check=False)


def test_generative_card_metadata_and_sections(published):
    folder, model = published["autoregressive"]
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "unconditional-image-generation", "apache-2.0")
    assert data.datasets == ["digits"] and set(data.metrics) == {"bits_per_dim", "accuracy"}
    results = {result.metric_type: result for result in data.eval_results}
    assert results["bits_per_dim"].metric_value == PRETRAINING["eval_bits_per_dim"]
    best = PROBE["best_layer"]
    assert results["accuracy"].metric_value == PROBE["best_layer_test_accuracy"]
    assert [result.dataset_split for result in data.eval_results] == ["eval", None]  # no training-set numbers
    assert results["accuracy"].task_name == f"Linear probe on f^{best}"
    gallery = [entry["output"]["url"] for entry in data.widget]
    assert gallery == ["images/samples.png", "images/completions.png", "images/inputs.png"]
    assert "<Gallery />" in card.text
    for section in SECTIONS + ["## Sampling", "## Probing"]:
        assert section in card.text, section
    assert 'trust_remote_code=True' in card.text and 'revision=revision' in card.text
    assert f"best layer is **{best}**" in card.text and "| 1 (best) | 62.00% |" in card.text
    assert "| peak learning rate | 0.0003 |" in card.text  # from trainer_state.json
    assert f"{model.num_parameters():,} parameters" in card.text


def test_bert_card_is_a_feature_extractor_with_bits_from_the_loss(published):
    folder, _ = published["bert"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.eval_results[0].metric_value == round(1.5 / math.log(2), 4)
    assert "## Sampling" not in card.text and "BERT" in card.text
    assert not (folder / "pipeline_igpt.py").exists()
    assert "custom_pipelines" not in json.loads((folder / "config.json").read_text())


def test_classifier_card_has_base_model_widget_and_accuracy(published):
    folder, model = published["classifier"]
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.pipeline_tag, data.base_model) == ("image-classification", "org/igpt-l")
    assert {(result.dataset_split, result.metric_value) for result in data.eval_results} == {("eval", 0.81), ("test", 0.79)}
    for entry in data.widget:
        prefix = "https://huggingface.co/org/igpt-l-digits/resolve/v1/"
        assert entry["src"].startswith(prefix) and (folder / entry["src"].removeprefix(prefix)).is_file()
    assert "Labels | 3: zero, one, two" in card.text
    for section in SECTIONS:
        assert section in card.text, section
    validation.validate(folder, model, remote_code_check=False)


def test_validation_rejects_incomplete_folders(published, tmp_path):
    source, model = published["autoregressive"]
    folder = Path(shutil.copytree(source, tmp_path / "copy"))
    (folder / "pipeline_igpt.py").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"pickle files \['pytorch_model.bin'\].*pipeline_igpt.IGPTImageGenerationPipeline has no code file"):
        validation.validate(folder, model, remote_code_check=False)


def test_remote_code_check_loads_the_folder_without_the_package(published, hub_model, tiny_processor):
    folder, model = published["classifier"]
    validation.check_loads_without_package(folder, model)
    other = hub_model(IGPTForImageClassification, num_labels=3)
    with torch.no_grad():
        other.score.weight.add_(1.0)  # a model the folder does not hold: the check must notice
    with pytest.raises(ValueError, match="(?s)does not load without the igpt package.*other outputs"):
        validation.check_loads_without_package(folder, other)
    other_palette = tiny_processor()
    other_palette.clusters = other_palette.clusters[::-1].copy()  # same colours, other ids: other tokens
    with pytest.raises(ValueError, match="(?s)does not load without the igpt package.*other tokens"):
        validation.check_loads_without_package(folder, model, processor=other_palette)


def test_run_python_hides_the_package_only_when_asked(tmp_path):
    script = "import importlib.util\nprint(importlib.util.find_spec('modeling_igpt') is not None)\nimport image_processing"
    hidden = validation.run_python(script, hf_home=tmp_path)
    assert hidden.returncode != 0 and hidden.stdout.strip() == "False"
    assert "ModuleNotFoundError: import of image_processing halted" in hidden.stderr, hidden.stderr[-2000:]
    shown = validation.run_python(script, hf_home=tmp_path, without_package=False)
    assert shown.returncode == 0 and shown.stdout.strip() == "True", shown.stderr[-2000:]


def test_probe_metrics_are_read_only_as_run_linear_probe_writes_them(tmp_path):
    metrics = card.read_metrics([probe_run(tmp_path / "probe")])["probe"]
    assert metrics == {"layers": {0: 0.31, 1: 0.62, 2: 0.48}, "best_layer": 1, "best_accuracy": 0.62,
                       "plot": tmp_path / "probe" / card.PROBE_PLOT}
    layer_mapping = {**PROBE, "layers": {"0": 0.31, "1": 0.62}}
    with pytest.raises(ValueError, match="'layers' must be run_linear_probe.py's list"):
        card.read_metrics([write_json(tmp_path / "mapping.json", layer_mapping)])
    no_best = {key: value for key, value in PROBE.items() if key != "best_layer"}
    with pytest.raises(ValueError, match="needs 'layer' and 'test_accuracy' per layer and 'best_layer'"):
        card.read_metrics([write_json(tmp_path / "no_best.json", no_best)])
    with pytest.raises(ValueError, match=r"best_layer 7 is not one of the probed layers \[0, 1, 2\]"):
        card.read_metrics([write_json(tmp_path / "bad_best.json", {**PROBE, "best_layer": 7})])
    assert card.read_metrics([write_json(tmp_path / "alone.json", PROBE)])["probe"]["plot"] is None


def test_publish_runs_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hub_cards.publish", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--skip_remote_code_check" in result.stdout and "CHECKPOINT" in result.stdout


# --- Bad input ----------------------------------------------------------------------------------------------------------


def test_bad_checkpoints_raise_clear_errors(tmp_path, hub_model, tiny_processor):
    model = hub_model(IGPTForCausalImageModeling)
    mismatched = checkpoint(tmp_path / "palette", model, tiny_processor(clusters=5))
    with pytest.raises(ValueError, match=r"vocab_size=9 \(8 colours \+ 1 start token\) but the tokenizer has 5 colours"):
        assemble(mismatched, tmp_path / "out1", "org/x")

    no_processor = tmp_path / "no_processor"
    model.save_pretrained(no_processor)
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        assemble(no_processor, tmp_path / "out2", "org/x")

    pickle_only = checkpoint(tmp_path / "pickle", model, tiny_processor())
    torch.save(model.state_dict(), pickle_only / "pytorch_model.bin")
    (pickle_only / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"only pickle weights \(pytorch_model.bin\); publishing requires model.safetensors"):
        assemble(pickle_only, tmp_path / "out3", "org/x")

    good = checkpoint(tmp_path / "good", model, tiny_processor())
    metrics = write_json(tmp_path / "m.json", PRETRAINING)
    with pytest.raises(ValueError, match="--metrics needs --dataset_name"):
        assemble(good, tmp_path / "out4", "org/x", "--metrics", metrics)
    (tmp_path / "broken.json").write_text("{eval_loss: 1")
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON"):
        assemble(good, tmp_path / "out5", "org/x", "--dataset_name", "d", "--metrics", str(tmp_path / "broken.json"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "old.txt").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        assemble(good, tmp_path / "busy", "org/x")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out3").exists()  # nothing written before the checks


@pytest.mark.parametrize("misfit", list(MISFITS))
def test_publish_refuses_a_processor_that_does_not_fit_the_model(tmp_path, misfit):
    model_shape, processor_shape, match = MISFITS[misfit]
    model = IGPTForCausalImageModeling(fit_config(*model_shape))
    folder = checkpoint(tmp_path / "ckpt", model, palette_processor(*processor_shape))
    with pytest.raises(ValueError, match=match) as error:
        assemble(folder, tmp_path / "out", "org/x")
    assert str(folder / "config.json") in str(error.value) and str(folder / "preprocessor_config.json") in str(error.value)
    assert not (tmp_path / "out").exists()


def test_push_uploads_the_folder_with_the_requested_options(published):
    folder, _ = published["classifier"]
    calls = []

    class RecordingApi:
        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    options = publish.parse_args(
        [str(folder), "--repo_id", "org/igpt-l-digits", "--output_dir", str(folder), "--private", "--revision", "v1", "--create_pr"]
    )
    publish.push(folder, options, api=RecordingApi())
    assert calls == [
        ("create_repo", ("org/igpt-l-digits",), {"private": True, "exist_ok": True}),
        ("create_branch", ("org/igpt-l-digits",), {"branch": "v1", "exist_ok": True}),
        ("upload_folder", (), {"repo_id": "org/igpt-l-digits", "folder_path": folder, "revision": "v1", "create_pr": True,
                               "commit_message": "Publish igpt-l-digits with hub_cards.publish"}),
    ]


# --- Offline loading from the Hugging Face cache --------------------------------------------------------------------------


def place_in_hf_cache(folder: Path, hub_cache: Path, repo_id: str) -> str:
    """Copy a repository folder into the cache layout huggingface_hub reads offline; returns its commit."""
    commit = f"{abs(hash(repo_id)):040x}"[-40:]
    repo_dir = hub_cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


OFFLINE_SCRIPT = """
import sys
mode, expected_path = sys.argv[1], sys.argv[2]
if mode == "remote_code":  # run by validation.run_python without the package
    extra = {"trust_remote_code": True}
else:
    import image_processing, modeling_igpt
    from modeling_igpt.pipeline_igpt import IGPTImageGenerationPipeline
    extra = {}
import numpy as np
import torch
from huggingface_hub import constants
from PIL import Image
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM,
                          AutoModelForImageClassification, pipeline)

assert constants.HF_HUB_OFFLINE
expected = torch.load(expected_path, weights_only=True)  # tensors and strings only: no pickle
generative, classifier = "org/igpt-l", "org/igpt-l-digits"
config = AutoConfig.from_pretrained(generative, **extra)
processor = AutoImageProcessor.from_pretrained(generative, revision=expected["commit"], **extra)
causal = AutoModelForCausalLM.from_pretrained(generative, revision=expected["commit"], **extra).eval()
base = AutoModel.from_pretrained(generative, **extra).eval()
head = AutoModelForImageClassification.from_pretrained(classifier, **extra).eval()
loaded = [config, processor, causal, base, head]
if mode == "remote_code":
    assert all(type(obj).__module__.startswith("transformers_modules") for obj in loaded), [type(o).__module__ for o in loaded]
else:
    assert [type(obj).__module__ for obj in loaded] == [
        "modeling_igpt.configuration_igpt", "image_processing.image_processing_igpt"] + ["modeling_igpt.modeling_igpt"] * 3

photo = Image.fromarray(expected["photo"].numpy())
input_ids = processor(photo, return_tensors="pt")["input_ids"]
assert torch.equal(input_ids, expected["input_ids"])
with torch.no_grad():
    assert torch.equal(causal(input_ids).logits, expected["causal_logits"])
    assert torch.equal(base(input_ids).last_hidden_state, expected["hidden_state"])
    assert torch.equal(head(input_ids).logits, expected["class_logits"])

classify = pipeline("image-classification", model=classifier, **extra)
assert classify(photo)[0]["label"] == expected["label"], classify(photo)
features = pipeline("image-feature-extraction", model=generative, revision=expected["commit"], **extra)
assert torch.allclose(torch.tensor(features(photo)), expected["hidden_state"], atol=1e-6)

generate = pipeline("unconditional-image-generation", model=generative, revision=expected["commit"], **extra)
if mode == "remote_code":
    assert type(generate).__module__.startswith("transformers_modules")
else:  # the installed class, without trust_remote_code although the config names the repository's pipeline code
    assert type(generate) is IGPTImageGenerationPipeline, type(generate)
completion = generate(photo, num_images=1, do_sample=False)[0]
assert np.array_equal(np.asarray(completion), expected["completion"].numpy())
assert len(generate(num_images=2, top_k=4)) == 2
print("offline OK", mode)
"""


@pytest.mark.parametrize("mode", ["remote_code", "installed_package"])
def test_offline_hub_ids_load_through_auto_classes_and_pipelines(published, tmp_path, mode):
    hub_cache = tmp_path / "hf" / "hub"
    generative, model = published["autoregressive"]
    classifier_folder, classifier = published["classifier"]
    commit = place_in_hf_cache(generative, hub_cache, "org/igpt-l")
    place_in_hf_cache(classifier_folder, hub_cache, "org/igpt-l-digits")

    processor = IGPTImageProcessor.from_pretrained(generative)
    photo = Image.fromarray(load_sample_images().images[1][::8, ::8])  # 80 x 54: pipelines take PIL images
    input_ids = processor(photo, return_tensors="pt")["input_ids"]
    kept = HEIGHT // 2 * WIDTH
    prompt = torch.cat([torch.tensor([[processor.start_token_id]]), input_ids[:, :kept]], dim=1)
    with torch.no_grad():
        class_logits = classifier(input_ids).logits
        completion = model.generate(prompt, max_new_tokens=HEIGHT * WIDTH - kept, do_sample=False)[:, 1:]
        expected = {
            "commit": commit, "photo": torch.from_numpy(np.asarray(photo).copy()), "input_ids": input_ids,
            "causal_logits": model(input_ids).logits,
            "hidden_state": model.transformer(input_ids).last_hidden_state,
            "class_logits": class_logits,
            "label": classifier.config.id2label[class_logits.argmax(-1).item()],
            "completion": torch.from_numpy(processor.decode(completion, output_type="np")[0]),
        }
    torch.save(expected, tmp_path / "expected.pt")
    result = validation.run_python(OFFLINE_SCRIPT, mode, str(tmp_path / "expected.pt"), hf_home=tmp_path / "hf",
                                   without_package=mode == "remote_code")
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"offline OK {mode}" in result.stdout


def test_generation_pipeline_from_a_published_folder_needs_no_trust_remote_code(published, monkeypatch):
    """With the package imported, its registered class serves the task; the config still names the Hub code for
    Pythons without the package (test_offline_hub_ids_load_through_auto_classes_and_pipelines runs both)."""
    from transformers import pipeline

    from modeling_igpt.pipeline_igpt import TASK, IGPTImageGenerationPipeline

    prompts = []

    def no_terminal(question):  # transformers asks on a terminal before running a folder's code: it must not ask
        prompts.append(question)
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    folder, _ = published["autoregressive"]
    assert TASK in json.loads((folder / "config.json").read_text())["custom_pipelines"]
    generate = pipeline(TASK, model=str(folder))
    assert prompts == []
    assert type(generate) is IGPTImageGenerationPipeline
    assert len(generate(num_images=2, top_k=2)) == 2


def test_publish_ships_the_endpoint_handler_and_writes_a_linked_space(tmp_path, hub_model, tiny_processor):
    folder = checkpoint(tmp_path / "ckpt", hub_model(IGPTForCausalImageModeling), tiny_processor())
    output_dir, _ = assemble(
        folder, tmp_path / "out", "org/igpt-s", "--space_dir", str(tmp_path / "space"), "--space_id", "org/igpt-s-demo",
        "--revision", "v1",
    )  # fmt: skip
    assert (output_dir / "handler.py").read_text() == (Path(publish.__file__).parent / "handler.py").read_text()
    assert {"app.py", "handler.py", "requirements.txt", "README.md", "space.json"} <= {p.name for p in (tmp_path / "space").iterdir()}
    assert json.loads((tmp_path / "space" / "space.json").read_text()) == {"model": "org/igpt-s", "revision": "v1"}
    assert "https://huggingface.co/spaces/org/igpt-s-demo" in (output_dir / "README.md").read_text()
    (output_dir / "handler.py").unlink()
    with pytest.raises(ValueError, match="no handler.py"):
        validation.check_files(output_dir, hub_model(IGPTForCausalImageModeling))

    calls = []

    class RecordingApi:
        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    options = publish.parse_args(
        [str(folder), "--repo_id", "org/igpt-s", "--output_dir", str(output_dir), "--space_dir", str(tmp_path / "space"),
         "--space_id", "org/igpt-s-demo"]
    )  # fmt: skip
    publish.push(output_dir, options, api=RecordingApi())
    assert calls[-2:] == [
        ("create_repo", ("org/igpt-s-demo",), {"repo_type": "space", "space_sdk": "gradio", "private": False, "exist_ok": True}),
        ("upload_folder", (), {"repo_id": "org/igpt-s-demo", "repo_type": "space", "folder_path": tmp_path / "space",
                               "commit_message": "Demo of org/igpt-s"}),
    ]
    with pytest.raises(ValueError, match="--space_id needs --space_dir"):
        assemble(folder, tmp_path / "other", "org/igpt-s", "--space_id", "org/igpt-s-demo")


# --- A prior on VQ-VAE codes --------------------------------------------------------------------------------------------


def test_a_vqvae_prior_publishes_with_its_vqvae_and_loads_without_the_package(tmp_path, tiny_model, random_model,
                                                                              tiny_vqvae_tokenizer, tiny_vqvae):
    tokenizer = tiny_vqvae_tokenizer()  # 12 x 12 images -> 6 x 6 codes from 16: what tiny_model() reads
    folder = checkpoint(tmp_path / "ckpt", random_model(tiny_model()), tokenizer)
    output_dir, model = assemble(folder, tmp_path / "out", "org/igpt-vq", "--dataset_name", "photos")
    names = {path.name for path in output_dir.iterdir()}
    assert {"pipeline_igpt.py", "image_tokenizer.py", "modeling_vqvae.py", "configuration_vqvae.py", "handler.py"} <= names
    assert {path.name for path in (output_dir / "vqvae").iterdir()} >= {"config.json", "model.safetensors",
                                                                      "modeling_vqvae.py", "configuration_vqvae.py"}
    images = {path.name for path in (output_dir / "images").iterdir()}
    assert images == {"samples.png", "completions.png", "inputs.png"}  # no palette to show

    text = (output_dir / "README.md").read_text()
    assert "## The VQ-VAE" in text and "## The palette" not in text
    assert "| Input | 12 x 12 images -> 6 x 6 VQ-VAE codes = 36 tokens, raster order |" in text
    assert "| Vocabulary | 16 VQ-VAE codes + 1 start token (id 16) |" in text
    assert 'snapshot_download("org/igpt-vq", revision=revision)' in text
    assert "the VQ-VAE's reconstruction from 6x6 of its 16 codes" in text

    validation.validate(output_dir, model)  # the package-free Python: same outputs, codes and decoded pictures
    with pytest.raises(ValueError, match="(?s)does not load without the igpt package.*(other tokens|other pictures)"):
        validation.check_loads_without_package(output_dir, model, vqvae=tiny_vqvae(seed=1))
    (output_dir / "vqvae" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="vqvae/ has no model.safetensors"):
        validation.check_files(output_dir, model)


def test_publish_refuses_a_non_generative_model_on_vqvae_codes(tmp_path, tiny_model, tiny_vqvae_tokenizer):
    folder = checkpoint(tmp_path / "ckpt", tiny_model(IGPTForImageClassification), tiny_vqvae_tokenizer())
    with pytest.raises(ValueError, match="IGPTForImageClassification on the codes of the VQ-VAE in vqvae/"):
        assemble(folder, tmp_path / "out", "org/x")
