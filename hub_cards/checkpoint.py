"""The checkpoint to publish: what its folder must hold, loading it, and which kind of model it is."""

from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageClassification
from transformers import AutoModelForMaskedImageModeling

import modeling_igpt
from image_processing import IGPTImageProcessor
from modeling_igpt import ImageTokenizer, check_model_fits_tokenizer
from modeling_igpt.image_tokenizer import VQVAE_FOLDER, load_vqvae


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
AUTO_CLASSES = {
    "IGPTForCausalImageModeling": AutoModelForCausalLM,
    "IGPTForMaskedImageModeling": AutoModelForMaskedImageModeling,
    "IGPTForImageClassification": AutoModelForImageClassification,
    "IGPTModel": AutoModel,
}


def check_checkpoint(folder: Path):
    """Fail early, naming the problem, on a folder that cannot become a Hub repository."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass a folder written by save_pretrained")
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        pickles = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(
                f"{folder} has only pickle weights ({', '.join(pickles)}); publishing requires model.safetensors. "
                "Convert released ImageGPT weights with `python -m hub_cards.convert_released`, or load the model and "
                "save_pretrained it again."
            )
        raise FileNotFoundError(f"{folder} has no model.safetensors")
    if not (folder / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no preprocessor_config.json: the image processor (its colour palette, or for a "
            "prior on VQ-VAE codes its resizing) must ship with the model. Fit a palette with `python -m image_processing` "
            "and save_pretrained the processor into the checkpoint."
        )


def load_checkpoint(folder: Path):
    """(model, processor) from a checkpoint folder, with the package's classes, checked to fit each other (with the
    VQ-VAE in `vqvae/` for a prior on VQ-VAE codes: `load_tokenizer`)."""
    check_checkpoint(folder)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "igpt":
        raise ValueError(
            f"{folder} holds a {config.model_type!r} model; convert ImageGPT with python -m hub_cards.convert_released"
        )
    processor, vqvae = IGPTImageProcessor.from_pretrained(folder), load_vqvae(folder)
    check_model_fits_tokenizer(config, processor, vqvae, model_source=folder / "config.json",
                               processor_source=folder / "preprocessor_config.json")
    architecture = (config.architectures or ["IGPTModel"])[0]
    if architecture not in AUTO_CLASSES:
        raise ValueError(f"Unsupported architecture {architecture!r}; expected one of {sorted(AUTO_CLASSES)}")
    if vqvae is not None and architecture != "IGPTForCausalImageModeling":
        raise ValueError(
            f"{folder} is an {architecture} on the codes of the VQ-VAE in {VQVAE_FOLDER}/: only "
            "autoregressive priors on VQ-VAE codes (IGPTForCausalImageModeling) are published, with the generation "
            "pipeline that decodes their samples"
        )
    model = getattr(modeling_igpt, architecture).from_pretrained(folder).eval()
    return model, processor


def load_tokenizer(folder: Path, processor) -> ImageTokenizer:
    """The checkpoint's ImageTokenizer: `processor`, plus the VQ-VAE in `vqvae/` for a prior on VQ-VAE codes."""
    return ImageTokenizer(processor, load_vqvae(folder), source=folder)


def model_kind(model) -> str:
    """"autoregressive" or "bert" for a pretrained model, "classifier" for a fine-tuned one."""
    if type(model).__name__ == "IGPTForImageClassification":
        return "classifier"
    return "autoregressive" if model.config.objective == "autoregressive" else "bert"
