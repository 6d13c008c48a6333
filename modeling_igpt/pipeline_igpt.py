"""Image generation pipeline for Image GPT: unconditional samples and image completions, as PIL images.

transformers has no pipeline for unconditional image generation. This one is registered under
"unconditional-image-generation" and recorded in a published checkpoint's config (`custom_pipelines`), so

    pipe = pipeline("unconditional-image-generation", model="org/igpt-s", revision=COMMIT, trust_remote_code=True)
    samples = pipe(num_images=8, top_k=64)  # 8 PIL images drawn from the start token
    completions = pipe(image, num_images=4)  # image (PIL, array, path or URL): top half kept, bottom half sampled 4 times

Images and tokens go through `ImageTokenizer`: palette colours, or the codes of a VQ-VAE for a prior on VQ-VAE codes
(the VQ-VAE's decoder turns sampled codes into pictures). The VQ-VAE is the `vqvae/` folder of the model's folder
(`save_pretrained` writes it there), or `vqvae=` (a model or a folder). For a Hub repository, load the pipeline from a
local snapshot (`huggingface_hub.snapshot_download(repo, revision=COMMIT)`), so that the prior, its VQ-VAE and their
code come from one commit.

This file is copied to the Hub next to the model, so it imports only torch, transformers and its siblings
`image_tokenizer.py`, `compatibility.py` and `modeling_vqvae.py`.
"""

import os

import torch
from transformers import AutoModelForCausalLM, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .image_tokenizer import VQVAE_FOLDER, ImageTokenizer, load_vqvae
from .modeling_vqvae import IGPTVQVAEModel


TASK = "unconditional-image-generation"
# `generate` keywords the pipeline sets itself: the length is always one whole image, the prompt is built here.
FIXED_GENERATE_KWARGS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "input_ids", "attention_mask")


def completion_prompts(
    pixel_ids: torch.LongTensor, width: int, height: int, start_token_id: int, prompt_fraction: float = 0.5
) -> torch.LongTensor:
    """Images' token ids (B, H*W) -> completion prompts (B, 1 + kept): the start token, then the top
    round(height x prompt_fraction) whole rows in raster order (the paper's half-image completions)."""
    kept = round(height * prompt_fraction) * width
    start = torch.full_like(pixel_ids[:, :1], start_token_id)
    return torch.cat([start, pixel_ids[:, :kept]], dim=1)


class IGPTImageGenerationPipeline(Pipeline):
    """Sample images from an autoregressive Image GPT, or complete the top rows of given images.

    Call with no image for unconditional samples (a list of `num_images` PIL images), with one image for its
    completions (a list of `num_images` PIL images), or with a list of images (a list of such lists).

    Args (at construction):
        vqvae: for a prior on VQ-VAE codes, its IGPTVQVAEModel or the folder holding it (default: the `vqvae/` folder
            of the model's folder).

    Args (per call or at construction):
        num_images: samples per call, or completions per given image (default 1).
        prompt_fraction: share of the image's rows kept as the prompt when completing (default 0.5, the top half).
        seed: seeds torch's global generator before sampling, for reproducible pictures.
        any other keyword (`top_k`, `temperature`, `do_sample`, ...) goes to `model.generate` (default do_sample=True).
    """

    # Which processors pipeline() loads for this class: transformers reads these class flags and has no public setting.
    _load_image_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False
    _load_video_processor = False  # else pipeline() probes for one and asks on a terminal about the folder's code

    def __init__(self, *args, vqvae: IGPTVQVAEModel | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        config, processor = self.model.config, self.image_processor
        if getattr(config, "objective", "autoregressive") != "autoregressive":
            raise ValueError(f"{TASK} needs an autoregressive checkpoint; this one has objective={config.objective!r}")
        if processor is None or not hasattr(processor, "decode"):
            raise ValueError(
                f"{TASK} needs the checkpoint's IGPT image processor (preprocessor_config.json) to turn pixels into "
                f"tokens and back; got {type(processor).__name__}"
            )
        if isinstance(vqvae, (str, os.PathLike)):
            vqvae = IGPTVQVAEModel.from_pretrained(vqvae)
        if vqvae is None and getattr(processor, "n_clusters", None) is None:
            vqvae = self._model_folder_vqvae()
        self.image_tokenizer = ImageTokenizer(processor, vqvae.to(self.device) if vqvae is not None else None)
        self.image_tokenizer.check_fits(config)

    def _model_folder_vqvae(self) -> IGPTVQVAEModel:
        """The VQ-VAE saved beside a prior on codes (its processor has no palette): `vqvae/` in the model's folder."""
        folder = self.model.name_or_path
        if not folder:  # a model built in memory
            raise ValueError(
                f"{TASK}: the image processor has no palette, so the model reads VQ-VAE codes: pass vqvae= (the "
                "IGPTVQVAEModel it was trained on, or its folder)"
            )
        if not os.path.isdir(folder):
            raise ValueError(
                f"The model {folder!r} reads VQ-VAE codes (its image processor has no palette) and is not a local "
                f"folder, so its VQ-VAE ({VQVAE_FOLDER}/) cannot be found at the model's revision: load the pipeline "
                "from huggingface_hub.snapshot_download(repo_id, revision=COMMIT), or pass vqvae="
            )
        vqvae = load_vqvae(folder)
        if vqvae is None:
            raise ValueError(
                f"{folder} has neither a palette in its image processor nor a VQ-VAE in {VQVAE_FOLDER}/: the pipeline "
                "cannot turn tokens into pictures. Save the processor with its palette, or the VQ-VAE the prior was "
                "trained on (ImageTokenizer.save_pretrained)"
            )
        return vqvae

    def save_pretrained(self, save_directory, **kwargs):
        """The model, processor, pipeline code and config.custom_pipelines; the VQ-VAE in `vqvae/` for a prior on
        codes."""
        super().save_pretrained(save_directory, **kwargs)
        if self.image_tokenizer.vqvae is not None:
            self.image_tokenizer.vqvae.save_pretrained(os.path.join(save_directory, VQVAE_FOLDER))

    def __call__(self, images=None, **kwargs):
        return super().__call__(images, **kwargs)

    def _sanitize_parameters(self, num_images=None, prompt_fraction=None, seed=None, **generate_kwargs):
        preprocess_params = {}
        if num_images is not None:
            preprocess_params["num_images"] = num_images
        if prompt_fraction is not None:
            if not 0.0 <= prompt_fraction < 1.0:
                raise ValueError(f"prompt_fraction must lie in [0, 1), got {prompt_fraction}")
            preprocess_params["prompt_fraction"] = prompt_fraction
        fixed = sorted(set(generate_kwargs) & set(FIXED_GENERATE_KWARGS))
        if fixed:
            raise ValueError(
                f"{TASK} always generates whole images (height x width tokens after the start token) from the prompt "
                f"it builds; it does not take {fixed}. Use prompt_fraction= to keep more or fewer rows of a given image."
            )
        if "num_return_sequences" in generate_kwargs:
            raise ValueError(f"{TASK} takes num_images= (samples per call or per image), not num_return_sequences")
        forward_params = {}
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if seed is not None:
            forward_params["seed"] = seed
        if generate_kwargs:
            forward_params["generate_kwargs"] = generate_kwargs
        return preprocess_params, forward_params, {}

    def preprocess(self, image, num_images: int = 1, prompt_fraction: float = 0.5):
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        start_token_id = self.image_tokenizer.start_token_id
        if image is None:
            return {"input_ids": torch.full((num_images, 1), start_token_id)}  # (n, 1)
        if isinstance(image, str):  # a path or URL, as in transformers' image pipelines
            image = load_image(image)
        token_ids = self.image_tokenizer([image])  # (1, H*W) colours, or (1, h*w) VQ-VAE codes
        height, width = self.image_tokenizer.grid_size
        prompt = completion_prompts(token_ids, width, height, start_token_id, prompt_fraction)
        return {"input_ids": prompt.expand(num_images, -1)}  # (n, 1 + kept)

    def _forward(self, model_inputs, seed: int | None = None, generate_kwargs: dict | None = None):
        prompt = model_inputs["input_ids"]  # (n, 1 + kept)
        height, width = self.image_tokenizer.grid_size
        if seed is not None:
            torch.manual_seed(seed)
        generated = self.model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_length=height * width + 1,
            **{"do_sample": True, **(generate_kwargs or {})},
        )  # (n, 1 + H*W)
        return {"input_ids": generated[:, 1:]}

    def postprocess(self, model_outputs):
        return self.image_tokenizer.decode(model_outputs["input_ids"])


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=IGPTImageGenerationPipeline, pt_model=AutoModelForCausalLM)
