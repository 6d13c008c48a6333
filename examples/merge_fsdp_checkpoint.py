#!/usr/bin/env python
"""One `save_pretrained` folder (config.json, model.safetensors, preprocessor_config.json) from a sharded FSDP
checkpoint.

With `fsdp_state_dict_type: SHARDED_STATE_DICT` (examples/accelerate_configs/fsdp2.yaml) every process writes its
own shard of the weights through torch.distributed.checkpoint: `checkpoint-N/pytorch_model_fsdp_0/__<rank>_0.distcp`
plus `.metadata`, and the optimiser state in `checkpoint-N/optimizer_0/` (what Trainer's FSDP resume reads; see
docs/scaling.md for what run_pretraining.py accepts). The run's final output folder already holds the full weights;
to publish or evaluate an intermediate checkpoint, merge it:

    python examples/merge_fsdp_checkpoint.py RUN/checkpoint-N MERGED [--config_from RUN]
    python -m hub_cards.publish MERGED --repo_id ORG/NAME --output_dir HUB_FOLDER

The weights are gathered on one CPU by accelerate's `merge_fsdp_weights` (what `accelerate merge-weights` runs); the
model config and the image processor (palette; `vqvae/` for VQ-VAE codes) are copied from the checkpoint (the
example scripts' trainers write them beside the shards), else from its parent folder, or from `--config_from`. The
merged folder is then loaded back with `from_pretrained`, refusing missing or unexpected weights and a processor that
does not fit the model.
"""

import argparse
import os
import shutil
from pathlib import Path

from accelerate.utils import merge_fsdp_weights
from transformers import AutoConfig

import modeling_igpt
from image_processing import IGPTImageProcessor
from modeling_igpt.compatibility import check_model_fits_tokenizer
from modeling_igpt.training import SHARDED_WEIGHTS_FOLDER


CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json")
VQVAE_FOLDER = "vqvae"


def find_config_folder(checkpoint: Path, config_from: Path | None) -> Path:
    for folder in [config_from] if config_from is not None else [checkpoint, checkpoint.parent]:
        if (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file():
            return folder
    where = str(config_from) if config_from is not None else f"{checkpoint} or {checkpoint.parent}"
    raise FileNotFoundError(
        f"No config.json with a preprocessor_config.json in {where}: pass --config_from with the run's output folder "
        "(or any folder holding the model's config and its image processor)."
    )


def merge_fsdp_checkpoint(checkpoint: str | os.PathLike, output_dir: str | os.PathLike, config_from=None):
    """Merge `checkpoint/pytorch_model_fsdp_0` into `output_dir/model.safetensors`, add config and processor, and
    return the model loaded from `output_dir`."""
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    shards = checkpoint / SHARDED_WEIGHTS_FOLDER
    if not (shards / ".metadata").is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no sharded FSDP weights ({SHARDED_WEIGHTS_FOLDER}/.metadata): give a checkpoint-N "
            "folder written with fsdp_state_dict_type SHARDED_STATE_DICT (a FULL_STATE_DICT run saves "
            "model.safetensors directly)."
        )
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty: pass a new folder")
    config_folder = find_config_folder(checkpoint, Path(config_from) if config_from is not None else None)

    merge_fsdp_weights(str(shards), str(output_dir), safe_serialization=True)
    for name in CONFIG_FILES:
        if (config_folder / name).is_file():
            shutil.copy2(config_folder / name, output_dir / name)
    if (config_folder / VQVAE_FOLDER).is_dir():
        shutil.copytree(config_folder / VQVAE_FOLDER, output_dir / VQVAE_FOLDER)

    config = AutoConfig.from_pretrained(output_dir)
    model_class = getattr(modeling_igpt, (config.architectures or ["IGPTForCausalImageModeling"])[0])
    model, loading = model_class.from_pretrained(output_dir, output_loading_info=True)
    problems = {kind: keys for kind, keys in loading.items() if keys and kind in ("missing_keys", "unexpected_keys")}
    if problems:
        raise ValueError(f"The merged weights in {output_dir} do not match {model_class.__name__}: {problems}")
    vqvae = None
    if (output_dir / VQVAE_FOLDER).is_dir():
        vqvae = modeling_igpt.IGPTVQVAEModel.from_pretrained(output_dir / VQVAE_FOLDER)
    processor = IGPTImageProcessor.from_pretrained(output_dir)
    check_model_fits_tokenizer(config, processor, vqvae, output_dir / "config.json", config_folder)
    return model


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint-N folder holding pytorch_model_fsdp_0/")
    parser.add_argument("output_dir", help="new folder for config.json, model.safetensors, preprocessor_config.json")
    parser.add_argument("--config_from", help="folder with config.json + preprocessor_config.json (default: the "
                        "checkpoint, then its parent)")
    options = parser.parse_args(argv)
    model = merge_fsdp_checkpoint(options.checkpoint, options.output_dir, options.config_from)
    print(f"{options.output_dir}: {type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
