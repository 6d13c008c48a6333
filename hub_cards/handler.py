"""Inference Endpoints handler for an Image GPT checkpoint: JSON in; images (base64 PNG), labels or features out.

The custom-handler convention of Hugging Face Inference Endpoints: this file sits at the root of the model repository,
the endpoint builds `EndpointHandler(path)` once with the repository's local folder and calls the handler with each
request's JSON body:

    {"inputs": null, "parameters": {"num_images": 4, "top_k": 64, "temperature": 1.0, "seed": 0}}  # samples
    {"inputs": "<base64 PNG or JPEG>", "parameters": {"num_images": 4, "prompt_fraction": 0.5}}   # completions
    {"inputs": "<base64 image>", "parameters": {"top_k": 5}}                                       # classifier
    {"inputs": "<base64 image>", "parameters": {"layer": 2}}                                       # features

What comes back depends on the checkpoint: an autoregressive model (IGPTForCausalImageModeling) answers
[{"image": "<base64 PNG>"}, ...], a classifier [{"label": ..., "score": ...}, ...] (best first, as the
image-classification pipeline does), a BERT or bare trunk [{"features": [...], "layer": l}], the probe features f^l.
`inputs` may also be a PIL image (the endpoint decodes binary image requests into one) or a data URI. Bad requests raise
a ValueError that names the problem.

Images become tokens the way the checkpoint was trained: palette colours, or, for an autoregressive prior on VQ-VAE
codes, the codes of the VQ-VAE in the checkpoint's `vqvae/` folder (loaded by its generation pipeline, whose sampled
codes the VQ-VAE's decoder turns into pictures; features are read from the codes). A classifier or trunk on VQ-VAE
codes is refused when loaded: publishing ships VQ-VAEs with autoregressive priors only.

The Space app (`hub_cards/space/app.py`, `python -m hub_cards.space.app`) runs the same class through its typed
methods (`sample`, `complete`, `classify`, `features`, `reconstruct`). This file imports only the standard library,
torch, transformers and PIL, and loads the checkpoint's own code (trust_remote_code=True): an endpoint needs no igpt
package.
"""

import base64
import binascii
import io

import PIL.Image
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, pipeline
from transformers.pipelines import PIPELINE_REGISTRY


GENERATION_TASK = "unconditional-image-generation"  # the task the checkpoint's pipeline_igpt.py registers
KINDS = {  # architecture -> what the handler serves
    "IGPTForCausalImageModeling": "generative",
    "IGPTForImageClassification": "classifier",
    "IGPTForMaskedImageModeling": "features",
    "IGPTModel": "features",
}
PARAMETERS = {  # kind -> the request parameters it takes
    "generative": {"num_images", "seed", "prompt_fraction", "temperature", "top_k", "top_p", "do_sample"},
    "classifier": {"top_k"},
    "features": {"layer"},
}
MAX_IMAGE_PIXELS = 50_000_000  # larger uploads are refused before they are decoded (a phone photo is 12-48 M pixels)
MAX_IMAGES = 16  # samples or completions per request


class EndpointHandler:
    """Loads the checkpoint in `path` once; each call answers one request (see the module docstring)."""

    def __init__(self, path: str = ""):
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        self.kind = checkpoint_kind(config, path)
        if self.kind == "generative":
            if GENERATION_TASK not in (getattr(config, "custom_pipelines", None) or {}) and not is_registered():
                raise ValueError(
                    f"{path or 'The checkpoint'} has no {GENERATION_TASK} pipeline (config.json custom_pipelines and "
                    "pipeline_igpt.py): publish it with python -m hub_cards.publish, or import modeling_igpt first"
                )
            self.pipeline = pipeline(GENERATION_TASK, model=path, trust_remote_code=True, device=-1)
        elif self.kind == "classifier":
            self.pipeline = pipeline("image-classification", model=path, trust_remote_code=True, device=-1)
        else:
            self.pipeline = None
        if self.pipeline is not None:
            self.model, self.processor = self.pipeline.model, self.pipeline.image_processor
        else:
            self.model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
            self.processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
        self.config = self.model.config
        # Images <-> token ids: the generation pipeline's ImageTokenizer (palette colours, or the codes of the VQ-VAE it
        # loads from the checkpoint's vqvae/ folder), else the processor's palette.
        self.image_tokenizer = self.pipeline.image_tokenizer if self.kind == "generative" else None
        if self.image_tokenizer is None and getattr(self.processor, "n_clusters", None) is None:
            raise ValueError(
                f"{path or 'The checkpoint'}: the image processor has no palette, so this {self.kind} model reads "
                "VQ-VAE codes; a model on VQ-VAE codes is served only as an autoregressive prior "
                "(IGPTForCausalImageModeling), whose generation pipeline loads the VQ-VAE from vqvae/"
            )

    def __call__(self, data: dict) -> list[dict]:
        if not isinstance(data, dict):
            raise ValueError(f'A request is a JSON object {{"inputs": ..., "parameters": {{...}}}}, got {type(data).__name__}')
        unknown = sorted(set(data) - {"inputs", "parameters"})
        if unknown:
            raise ValueError(f'Unknown request keys {unknown}: a request has "inputs" and "parameters"')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be a JSON object, got {type(parameters).__name__}')
        unknown = sorted(set(parameters) - PARAMETERS[self.kind])
        if unknown:
            raise ValueError(
                f"Unknown parameters {unknown} for this {self.kind} checkpoint; it takes {sorted(PARAMETERS[self.kind])}"
            )
        inputs = data.get("inputs")
        image = None if inputs is None or inputs == "" else read_image(inputs)
        if self.kind == "generative":
            images = self.sample(**parameters) if image is None else self.complete(image, **parameters)
            return [{"image": encode_png(picture)} for picture in images]
        if image is None:
            raise ValueError(f'This {self.kind} checkpoint needs an image: "inputs" is a base64-encoded PNG or JPEG')
        if self.kind == "classifier":
            return self.classify(image, **parameters)
        layer = parameters.get("layer", self.default_layer)
        return [{"features": self.features([image], layer)[0].tolist(), "layer": layer}]

    # --- Typed methods (PIL in, PIL or numbers out), shared with the Space app -----------------------------------------

    def sample(self, num_images: int = 1, seed: int | None = None, **generate_kwargs) -> list[PIL.Image.Image]:
        """`num_images` images drawn from the start token; `generate_kwargs` (top_k, temperature, streamer...) go to
        `model.generate`, whose default on the CPU is IGPT's image decoder."""
        self._check_generative(num_images)
        return self.pipeline(num_images=num_images, seed=seed, **generate_kwargs)

    def complete(
        self, image: PIL.Image.Image, num_images: int = 1, prompt_fraction: float = 0.5, seed: int | None = None,
        **generate_kwargs,
    ) -> list[PIL.Image.Image]:
        """`num_images` completions of `image`: its top `prompt_fraction` of rows kept, the rest sampled."""
        self._check_generative(num_images)
        return self.pipeline(image, num_images=num_images, prompt_fraction=prompt_fraction, seed=seed, **generate_kwargs)

    def classify(self, image: PIL.Image.Image, top_k: int = 5) -> list[dict]:
        """The `top_k` most likely labels, best first: [{"label": str, "score": float}, ...]."""
        if self.kind != "classifier":
            raise ValueError(f"This is a {self.kind} checkpoint, not a classifier")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        return self.pipeline(image, top_k=min(top_k, self.config.num_labels))

    @torch.inference_mode()
    def features(self, images: list[PIL.Image.Image], layer: int) -> torch.Tensor:
        """Probe features f^layer (the mean over positions of the normalised hidden state), (len(images), d)."""
        layers = self.config.num_hidden_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= layers:
            raise ValueError(f"layer must be an integer in [0, {layers}] for this {layers}-layer model, got {layer!r}")
        input_ids = self.tokenize(images)  # (B, N)
        return self.model.base_model.get_probe_features(input_ids, layers=layer)  # (B, d)

    def tokenize(self, images: list[PIL.Image.Image]) -> torch.LongTensor:
        """Images -> the token ids the model reads, (B, N): palette colours (N = H x W pixels) or, for a prior on
        VQ-VAE codes, the VQ-VAE's codes (N = h x w, the code grid)."""
        if self.image_tokenizer is not None:
            return self.image_tokenizer(images)
        return self.processor(images, return_tensors="pt")["input_ids"]

    def reconstruct(self, images: list[PIL.Image.Image]) -> list[PIL.Image.Image]:
        """What the model sees of each image, as a picture of `image_size`: its palette colours, or the VQ-VAE's
        reconstruction from its codes."""
        token_ids = self.tokenize(images)  # (B, N)
        if self.image_tokenizer is not None:
            return self.image_tokenizer.decode(token_ids)
        return self.processor.decode(token_ids)

    @property
    def vqvae(self):
        """The VQ-VAE whose codes a prior reads (its `vqvae/` folder), or None for a model on palette colours."""
        return self.image_tokenizer.vqvae if self.image_tokenizer is not None else None

    @property
    def default_layer(self) -> int:
        return self.config.num_hidden_layers // 2  # the paper's probes peak in the middle of the network

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the pictures in and out: the processor's size (the VQ-VAE's input and output for a
        prior on codes)."""
        size = self.processor.size
        return (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(height, width) of the token grid the model reads in raster order: the pixels, or the VQ-VAE's codes."""
        return self.image_tokenizer.grid_size if self.image_tokenizer is not None else self.image_size

    def _check_generative(self, num_images):
        if self.kind != "generative":
            raise ValueError(f"This is a {self.kind} checkpoint: it does not sample images")
        if not isinstance(num_images, int) or isinstance(num_images, bool) or not 1 <= num_images <= MAX_IMAGES:
            raise ValueError(f"num_images must be an integer in [1, {MAX_IMAGES}], got {num_images!r}")


def checkpoint_kind(config, path: str = "") -> str:
    """"generative", "classifier" or "features", from the checkpoint's config."""
    if config.model_type != "igpt":
        raise ValueError(f"{path or 'The checkpoint'} holds a {config.model_type!r} model, not an Image GPT (igpt) one")
    architecture = (config.architectures or ["IGPTModel"])[0]
    if architecture not in KINDS:
        raise ValueError(f"Unsupported architecture {architecture!r}; expected one of {sorted(KINDS)}")
    return KINDS[architecture]


def is_registered() -> bool:
    """Whether the generation pipeline is registered in this Python (the igpt package was imported)."""
    return GENERATION_TASK in PIPELINE_REGISTRY.get_supported_tasks()


def read_image(inputs) -> PIL.Image.Image:
    """A request's image: a PIL image, or a PNG/JPEG/... file as base64 text (optionally a data URI) or bytes.

    Refuses, by name, text that is not base64, bytes that are not an image, and images over `MAX_IMAGE_PIXELS` (checked
    from the header, before decoding). Grayscale, palette and RGBA images are returned as they are: the image processor
    reads them as RGB (transparent pixels composited onto white).
    """
    if isinstance(inputs, str):
        encoded = inputs.split(",", 1)[1] if inputs.startswith("data:") else inputs
        try:
            inputs = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f'"inputs" is not base64 ({len(inputs)} characters starting {inputs[:20]!r}): send the image file '
                "(PNG, JPEG, ...) base64-encoded"
            ) from None
    if isinstance(inputs, (bytes, bytearray)):
        try:
            image = PIL.Image.open(io.BytesIO(inputs))
        except PIL.Image.DecompressionBombError as error:
            raise ValueError(f"The image is too large: {error}") from None
        except (OSError, PIL.UnidentifiedImageError):
            raise ValueError(
                f"The {len(inputs)} bytes sent are not an image file PIL can read (PNG, JPEG, WebP, ...)"
            ) from None
    elif isinstance(inputs, PIL.Image.Image):
        image = inputs
    else:
        raise ValueError(f'"inputs" must be a base64-encoded image or null, got {type(inputs).__name__}')
    check_image_size(image)
    try:
        image.load()
    except OSError as error:
        raise ValueError(f"The image file is damaged or truncated: {error}") from None
    return image


def check_image_size(image: PIL.Image.Image):
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"The image is empty ({width} x {height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"The image is {width} x {height} = {width * height / 1e6:.1f} M pixels; the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} M. Resize it first: the model sees it at a few dozen pixels a side anyway."
        )


def encode_png(image: PIL.Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
