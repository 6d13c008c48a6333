"""Image generation pipeline for Image GPT: unconditional samples and image completions, as PIL images.

transformers has no pipeline for unconditional image generation. This one is registered under
"unconditional-image-generation" and recorded in a published checkpoint's config (`custom_pipelines`), so

    pipe = pipeline("unconditional-image-generation", model="org/igpt-s", revision=COMMIT, trust_remote_code=True)
    samples = pipe(num_images=8, top_k=64)  # 8 PIL images drawn from the start token
    completions = pipe(image, num_images=4)  # image (PIL, array, path or URL): top half kept, bottom half sampled 4 times

This file is copied to the Hub next to the model, so it imports only torch, transformers and its sibling
`compatibility.py` (the model-tokenizer rule). It reads the image processor by its methods (`__call__`, `decode`,
`n_clusters`, `start_token_id`, `size`), never by its class.
"""

import torch
from transformers import AutoModelForCausalLM, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .compatibility import check_model_fits_tokenizer


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_model_and_processor()

    def _check_model_and_processor(self):
        config, processor = self.model.config, self.image_processor
        if getattr(config, "objective", "autoregressive") != "autoregressive":
            raise ValueError(f"{TASK} needs an autoregressive checkpoint; this one has objective={config.objective!r}")
        if processor is None or not hasattr(processor, "decode"):
            raise ValueError(
                f"{TASK} needs the checkpoint's IGPT image processor (preprocessor_config.json with the palette) to "
                f"turn pixels into tokens and back; got {type(processor).__name__}"
            )
        check_model_fits_tokenizer(config, processor)

    def _image_size(self) -> tuple[int, int]:
        size = self.image_processor.size
        return (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)

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
        start = torch.full((num_images, 1), self.image_processor.start_token_id)  # (n, 1)
        if image is None:
            return {"input_ids": start}
        if isinstance(image, str):  # a path or URL, as in transformers' image pipelines
            image = load_image(image)
        pixels = self.image_processor(image, return_tensors="pt")["input_ids"]  # (1, H*W)
        height, width = self._image_size()
        prompt = completion_prompts(pixels, width, height, self.image_processor.start_token_id, prompt_fraction)
        return {"input_ids": prompt.expand(num_images, -1)}  # (n, 1 + kept)

    def _forward(self, model_inputs, seed: int | None = None, generate_kwargs: dict | None = None):
        prompt = model_inputs["input_ids"]  # (n, 1 + kept)
        height, width = self._image_size()
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
        return self.image_processor.decode(model_outputs["input_ids"])


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=IGPTImageGenerationPipeline, pt_model=AutoModelForCausalLM)
