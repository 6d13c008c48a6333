"""Convert transformers ImageGPT checkpoints to IGPT and back.

    python -m modeling_igpt.convert_imagegpt SRC DST            # ImageGPT folder (e.g. openai/imagegpt-small) -> IGPT
    python -m modeling_igpt.convert_imagegpt SRC DST --reverse  # IGPT folder -> ImageGPT

DST must be a new or empty folder other than SRC; `--overwrite` writes into it anyway (files of the same name replaced).

Both families use GPT-2 parameter names and Conv1D [in, out] layouts, so weights copy key for key; only the config
fields are renamed. The palette (`clusters` in [-1, 1]) travels with the image processor.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import (
    ImageGPTConfig,
    ImageGPTForCausalImageModeling,
    ImageGPTForImageClassification,
    ImageGPTImageProcessorPil,
    ImageGPTModel,
)

from .compatibility import check_model_fits_tokenizer
from .configuration_igpt import IGPTConfig
from .modeling_igpt import IGPTForCausalImageModeling, IGPTForImageClassification, IGPTModel, model_inputs


# (ImageGPT class, IGPT class) pairs, matched on the source's `architectures`.
CLASS_PAIRS = {
    "ImageGPTForCausalImageModeling": (ImageGPTForCausalImageModeling, IGPTForCausalImageModeling),
    "ImageGPTForImageClassification": (ImageGPTForImageClassification, IGPTForImageClassification),
    "ImageGPTModel": (ImageGPTModel, IGPTModel),
}
# ImageGPT config field -> IGPT config field.
RENAMED_FIELDS = {
    "vocab_size": "vocab_size",
    "n_positions": "max_position_embeddings",
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "activation_function": "hidden_act",
    "layer_norm_epsilon": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "embd_pdrop": "embedding_dropout",
    "attn_pdrop": "attention_dropout",
    "resid_pdrop": "residual_dropout",
}
SHARED_FIELDS = ("id2label", "label2id", "problem_type")


def imagegpt_to_igpt_config(source: ImageGPTConfig) -> IGPTConfig:
    unsupported = [flag for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention") if getattr(source, flag)]
    if not source.scale_attn_weights:
        unsupported.append("scale_attn_weights=False")
    if unsupported:
        raise ValueError(f"Cannot convert an ImageGPT config with {unsupported}: IGPT implements the paper's attention only")
    fields = {new: getattr(source, old) for old, new in RENAMED_FIELDS.items()}
    fields.update({name: getattr(source, name) for name in SHARED_FIELDS if getattr(source, name, None) is not None})
    return IGPTConfig(objective="autoregressive", **fields)


def igpt_to_imagegpt_config(source: IGPTConfig) -> ImageGPTConfig:
    if source.objective != "autoregressive":
        raise ValueError("transformers' ImageGPT is autoregressive only: a BERT checkpoint has no ImageGPT equivalent")
    fields = {old: getattr(source, new) for old, new in RENAMED_FIELDS.items()}
    fields.update({name: getattr(source, name) for name in SHARED_FIELDS if getattr(source, name, None) is not None})
    return ImageGPTConfig(**fields)


def copy_weights(source: torch.nn.Module, target: torch.nn.Module):
    """Load `source`'s parameters into `target` by name.

    Only a classifier's generative head may differ: IGPT classifiers carry one for L_gen (zero-initialised when the
    source has none), transformers' ImageGPT classifiers have none (it is dropped on the way back).
    """
    weights = {name: tensor for name, tensor in source.state_dict().items() if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    missing, unexpected = target.load_state_dict(weights, strict=False)
    classifier = any(isinstance(model, (ImageGPTForImageClassification, IGPTForImageClassification)) for model in (source, target))
    allowed = {"lm_head.weight"} if classifier else set()
    if set(unexpected) - allowed or set(missing) - allowed:
        raise ValueError(f"Weights do not match: missing {sorted(missing)}, unexpected {sorted(unexpected)}")


def reads(model: torch.nn.Module, pixels: torch.LongTensor) -> torch.LongTensor:
    """What `model` takes for an image's pixel ids: IGPT's classifier adds the start token itself; every other model
    (transformers' ImageGPT classifier included) reads the trunk's inputs [start, x_1 .. x_{N-1}]."""
    if isinstance(model, IGPTForImageClassification):
        return pixels
    return model_inputs(pixels, "autoregressive", model.config.vocab_size - 1)


@torch.no_grad()
def check_same_outputs(source: torch.nn.Module, target: torch.nn.Module, tolerance: float = 1e-5):
    """Both models score one random image alike (largest difference relative to the largest output), or ValueError."""
    pixels = torch.randint(0, source.config.vocab_size - 1, (1, source.config.max_position_embeddings))
    expected, actual = source(reads(source, pixels))[0], target(reads(target, pixels))[0]
    difference = ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    if difference > tolerance:
        raise ValueError(f"The converted model's outputs differ from the source's by {difference:.2e} (relative)")


def _architecture(folder: Path, model_type: str) -> str:
    """The source's architecture, after checking that the folder holds a `model_type` checkpoint at all."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass a folder written by save_pretrained")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != model_type:
        is_igpt = config.get("model_type") == "igpt"
        direction = "IGPT -> ImageGPT takes --reverse" if is_igpt else "ImageGPT -> IGPT: drop --reverse"
        raise ValueError(
            f"{folder} holds a {config.get('model_type')!r} checkpoint, but this conversion reads {model_type!r} ones "
            f"({direction})"
        )
    architectures = config.get("architectures") or ["ImageGPTForCausalImageModeling"]
    name = architectures[0].replace("IGPT", "ImageGPT")
    if name not in CLASS_PAIRS:
        raise ValueError(f"Unsupported architecture {architectures[0]!r}; expected one of {sorted(CLASS_PAIRS)}")
    return name


def _load_clusters(folder: Path):
    path = folder / "preprocessor_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no preprocessor_config.json: the palette (clusters) is needed to convert")
    processor = json.loads(path.read_text())
    if "clusters" not in processor:
        raise ValueError(f"{path} has no 'clusters' entry")
    return processor


def check_target(source_dir: Path, target_dir: Path, overwrite: bool = False):
    """Refuse, before any work, to write into the source folder or into a folder holding files, unless `overwrite`."""
    if target_dir.exists() and not target_dir.is_dir():
        raise FileExistsError(f"{target_dir} is a file: the target must be a folder")
    if overwrite or not target_dir.exists():
        return
    if target_dir.resolve() == source_dir.resolve():
        raise FileExistsError(
            f"The target {target_dir} is the source folder: converting in place would overwrite the source's config "
            "and weights. Pass a new folder, or --overwrite (overwrite=True) to do it anyway."
        )
    if any(target_dir.iterdir()):
        names = sorted(path.name for path in target_dir.iterdir())
        raise FileExistsError(
            f"{target_dir} is not empty ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): pass a new "
            "folder, or --overwrite (overwrite=True) to replace files of the same names."
        )


def _check_fits(config, processor: dict, source_dir: Path):
    """The package's one model-tokenizer rule, on the source's config and palette (converted to ours)."""
    from image_processing import IGPTImageProcessor

    check_model_fits_tokenizer(
        config, IGPTImageProcessor.from_dict(processor), model_source=source_dir / "config.json",
        processor_source=source_dir / "preprocessor_config.json",
    )


def convert_imagegpt_to_igpt(source_dir: str | os.PathLike, target_dir: str | os.PathLike, overwrite: bool = False):
    """ImageGPT folder (config, weights, preprocessor_config.json) -> IGPT folder (model + IGPTImageProcessor)."""
    from image_processing import IGPTImageProcessor

    source_dir, target_dir = Path(source_dir), Path(target_dir)
    check_target(source_dir, target_dir, overwrite)
    source_class, target_class = CLASS_PAIRS[_architecture(source_dir, "imagegpt")]
    processor = _load_clusters(source_dir)
    source = source_class.from_pretrained(source_dir, attn_implementation="eager").eval()
    target = target_class(imagegpt_to_igpt_config(source.config)).eval()
    _check_fits(target.config, processor, source_dir)
    copy_weights(source, target)
    check_same_outputs(source, target)
    target.save_pretrained(target_dir)
    # from_dict keeps ImageGPT's preprocessing (a stretch to `size`, no centre crop): same image, same tokens.
    IGPTImageProcessor.from_dict(processor).save_pretrained(target_dir)
    return target


def convert_igpt_to_imagegpt(source_dir: str | os.PathLike, target_dir: str | os.PathLike, overwrite: bool = False):
    """IGPT folder -> ImageGPT folder (model + transformers' ImageGPTImageProcessor with the same palette)."""
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    check_target(source_dir, target_dir, overwrite)
    target_class, source_class = CLASS_PAIRS[_architecture(source_dir, "igpt")]
    processor = _load_clusters(source_dir)
    source = source_class.from_pretrained(source_dir).eval()
    _check_fits(source.config, processor, source_dir)
    target = target_class(igpt_to_imagegpt_config(source.config)).eval()
    copy_weights(source, target)
    check_same_outputs(source, target)
    target.save_pretrained(target_dir)
    ImageGPTImageProcessorPil(clusters=processor["clusters"], size=processor.get("size")).save_pretrained(target_dir)
    return target


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="folder with config.json, weights and preprocessor_config.json")
    parser.add_argument("target", help="output folder")
    parser.add_argument("--reverse", action="store_true", help="convert IGPT -> transformers ImageGPT")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty target, or into the source folder itself"
    )
    args = parser.parse_args(argv)
    convert = convert_igpt_to_imagegpt if args.reverse else convert_imagegpt_to_igpt
    model = convert(args.source, args.target, overwrite=args.overwrite)
    print(f"Wrote {type(model).__name__} ({model.num_parameters():,} parameters, outputs checked) to {args.target}")


if __name__ == "__main__":
    main()
