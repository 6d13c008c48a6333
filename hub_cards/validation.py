"""Is a repository folder what a Hub user needs? Only safetensors weights, every auto_map file present, identical
outputs through the Auto classes, card metadata that parses, and the same outputs and tokens in a Python where this
package cannot be imported (`trust_remote_code=True`, the repository's own code).

`run_python` is that package-free Python; the tests use it too.
"""

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard
from transformers import AutoImageProcessor

from modeling_igpt import ImageTokenizer
from modeling_igpt.configuration_igpt import AUTO_MAP
from modeling_igpt.image_tokenizer import VQVAE_FOLDER, load_vqvae
from modeling_igpt.pipeline_igpt import TASK as GENERATION_TASK

from .checkpoint import AUTO_CLASSES, PICKLE_SUFFIXES, model_kind


PACKAGES = ("modeling_igpt", "image_processing")  # what a Hub user does not have
HIDE_PACKAGES = f"""
import sys
for _package in {PACKAGES!r}:
    sys.modules[_package] = None  # installed here: importing it now raises ImportError, as for a Hub user
"""


def validate(output_dir: Path, model, remote_code_check: bool = True) -> ModelCard:
    """Raise on anything a Hub user would trip over; returns the reloaded card."""
    check_files(output_dir, model)
    check_reload(output_dir, model)
    card = check_card(output_dir)
    if remote_code_check:
        check_loads_without_package(output_dir, model)
    return card


def check_files(output_dir: Path, model):
    """safetensors only, and a code file for every auto_map and custom_pipelines entry."""
    problems = []
    pickles = [path.name for path in output_dir.rglob("*") if path.suffix in PICKLE_SUFFIXES]
    if pickles:
        problems.append(f"pickle files {pickles}")
    if not (output_dir / "model.safetensors").is_file():
        problems.append("no model.safetensors")
    if not (output_dir / "handler.py").is_file():
        problems.append("no handler.py (Inference Endpoints)")
    config = json.loads((output_dir / "config.json").read_text())
    missing_entries = set(AUTO_MAP) - set(config.get("auto_map", {}))
    if missing_entries:
        problems.append(f"config auto_map lacks {sorted(missing_entries)}")
    processor_config = json.loads((output_dir / "preprocessor_config.json").read_text())
    code_refs = list(config.get("auto_map", {}).values()) + list(processor_config.get("auto_map", {}).values())
    code_refs += [task["impl"] for task in config.get("custom_pipelines", {}).values()]
    if "AutoImageProcessor" not in processor_config.get("auto_map", {}):
        problems.append("preprocessor_config.json has no auto_map for AutoImageProcessor")
    if model_kind(model) == "autoregressive" and GENERATION_TASK not in config.get("custom_pipelines", {}):
        problems.append(f"config has no custom_pipelines entry for {GENERATION_TASK}")
    for reference in code_refs:
        if not (output_dir / f"{reference.split('.')[0]}.py").is_file():
            problems.append(f"{reference} has no code file")
    if (output_dir / VQVAE_FOLDER).is_dir():
        problems += vqvae_problems(output_dir / VQVAE_FOLDER)
    if problems:
        raise ValueError(f"{output_dir} is not a complete repository: " + "; ".join(problems))


def vqvae_problems(folder: Path) -> list[str]:
    """What the VQ-VAE folder of a prior on codes lacks: its config, safetensors weights, the code its auto_map names."""
    if not (folder / "config.json").is_file():
        return [f"{VQVAE_FOLDER}/ has no config.json"]
    problems = [] if (folder / "model.safetensors").is_file() else [f"{VQVAE_FOLDER}/ has no model.safetensors"]
    for reference in json.loads((folder / "config.json").read_text()).get("auto_map", {}).values():
        if not (folder / f"{reference.split('.')[0]}.py").is_file():
            problems.append(f"{VQVAE_FOLDER}/: {reference} has no code file")
    return problems


def check_reload(output_dir: Path, model):
    """The folder gives the model's outputs through the Auto classes, and its tokenizer (processor, and VQ-VAE for a
    prior on codes) fits its model."""
    inputs = reference_inputs(model.config)
    reloaded = AUTO_CLASSES[type(model).__name__].from_pretrained(output_dir).eval()
    if not torch.equal(model_outputs(reloaded, inputs), model_outputs(model, inputs)):
        raise ValueError(f"{output_dir} does not reproduce the checkpoint's outputs")
    ImageTokenizer.from_pretrained(output_dir).check_fits(reloaded.config, model_source=output_dir / "config.json")


def check_card(output_dir: Path) -> ModelCard:
    card = ModelCard.load(output_dir / "README.md")
    data = card.data.to_dict()
    if data.get("library_name") != "transformers" or not data.get("pipeline_tag"):
        raise ValueError("The card metadata lacks library_name: transformers or a pipeline_tag")
    for entry in data.get("widget") or []:
        url = entry.get("output", {}).get("url")
        if url and not (output_dir / url).is_file():
            raise ValueError(f"The card's gallery names {url}, which is not in the folder")
    return card


def reference_inputs(config) -> dict:
    """Two random images' tokens, and a fixed BERT mask for BERT models (theirs is random when not given)."""
    generator = torch.Generator().manual_seed(0)
    shape = (2, config.max_position_embeddings)
    inputs = {"input_ids": torch.randint(0, config.vocab_size - 1, shape, generator=generator)}
    if config.objective == "bert":
        inputs["bool_masked_pos"] = torch.rand(shape, generator=generator) < config.mask_probability
    return inputs


def reference_image() -> np.ndarray:
    """(27, 20, 3) uint8 noise: not the processor's size, so resizing is part of what is compared."""
    return np.random.default_rng(0).integers(0, 256, (27, 20, 3), dtype=np.uint8)


@torch.no_grad()
def model_outputs(model, inputs: dict) -> torch.Tensor:
    """The model's logits, or its last hidden state for the bare IGPTModel."""
    outputs = model(**inputs)
    logits = getattr(outputs, "logits", None)
    return outputs.last_hidden_state if logits is None else logits


# ---------------------------------------------------------------------------------------------------------------------
# A Python without this package


def run_python(script: str, *args: str, hf_home: Path, without_package: bool = True) -> subprocess.CompletedProcess:
    """Run `script` (with `args` as sys.argv[1:]) in a fresh, isolated, offline Python whose Hugging Face cache is
    `hf_home`; with `without_package`, `modeling_igpt` and `image_processing` cannot be imported there (as for a Hub
    user, who has only transformers and the repository's code files). Returns the finished process."""
    script = (HIDE_PACKAGES if without_package else "") + textwrap.dedent(script)
    hf_home = Path(hf_home)
    with tempfile.TemporaryDirectory() as scratch:  # the working directory: nothing importable from it
        (Path(scratch) / "script.py").write_text(script)
        environment = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-I", str(Path(scratch) / "script.py"), *args],
            capture_output=True, text=True, cwd=scratch, env=environment,
        )


CHECK_SCRIPT = f"""
import os
import sys
import numpy as np
import torch
import transformers

folder, auto_class, expected_path = sys.argv[1:]
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
loaded = [model, processor]
expected = torch.load(expected_path, weights_only=True)
image = expected["image"].numpy()
if os.path.isdir(os.path.join(folder, {VQVAE_FOLDER!r})):  # a prior on VQ-VAE codes: tokens through its pipeline
    tokenizer = transformers.pipeline({GENERATION_TASK!r}, model=folder, trust_remote_code=True).image_tokenizer
    loaded.append(tokenizer.vqvae)
    input_ids = tokenizer([image])
    decoded = np.stack([np.asarray(picture) for picture in tokenizer.decode(input_ids)])
    assert np.array_equal(decoded, expected["decoded"].numpy()), "the repository's VQ-VAE decodes other pictures"
else:
    input_ids = processor(image, return_tensors="pt")["input_ids"]
for module in loaded:
    assert type(module).__module__.startswith("transformers_modules"), type(module).__module__
assert torch.equal(input_ids, expected["input_ids"]), "the repository's processor gives other tokens"
with torch.no_grad():
    outputs = model(**expected["inputs"])
outputs = outputs.last_hidden_state if getattr(outputs, "logits", None) is None else outputs.logits
assert torch.equal(outputs, expected["outputs"]), "the repository's model gives other outputs"
print("loads without the package")
"""


def check_loads_without_package(output_dir: Path, model, processor=None, vqvae=None):
    """Load the folder with trust_remote_code=True in a Python where this package cannot be imported: the model must
    give the same outputs and the processor (by default the folder's own, as saved) the same tokens; for a prior on
    VQ-VAE codes, the pipeline's tokenizer the same codes and its VQ-VAE (by default the folder's own) the same
    decoded pictures."""
    output_dir = Path(output_dir).resolve()
    processor = processor or AutoImageProcessor.from_pretrained(output_dir)
    tokenizer = ImageTokenizer(processor, vqvae or load_vqvae(output_dir))
    image, inputs = reference_image(), reference_inputs(model.config)
    input_ids = tokenizer([image])  # (1, N) colours or VQ-VAE codes
    expected = {
        "image": torch.from_numpy(image),
        "input_ids": input_ids,
        "inputs": inputs,
        "outputs": model_outputs(model, inputs),
    }
    if tokenizer.vqvae is not None:
        pictures = [np.asarray(picture) for picture in tokenizer.decode(input_ids)]
        expected["decoded"] = torch.from_numpy(np.stack(pictures))  # (1, H, W, 3) uint8
    with tempfile.TemporaryDirectory() as scratch:
        torch.save(expected, Path(scratch) / "expected.pt")
        auto_class = AUTO_CLASSES[type(model).__name__].__name__
        result = run_python(CHECK_SCRIPT, str(output_dir), auto_class, str(Path(scratch) / "expected.pt"),
                            hf_home=Path(scratch) / "hf")
    if result.returncode != 0 or "loads without the package" not in result.stdout:
        raise ValueError(f"{output_dir} does not load without the igpt package:\n{result.stderr[-3000:]}")
