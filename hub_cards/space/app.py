"""Image GPT in the browser: a Gradio app for one checkpoint, as a Hugging Face Space or locally.

    python -m hub_cards.space.app --model PATH_OR_REPO [--revision COMMIT] [--port 7860]   # from the checkout's root
    python app.py --model PATH_OR_REPO                                                    # in a Space folder

In a Space (written by `hub_cards.space.write_space`) the model comes from the `IGPT_MODEL` variable (and
`IGPT_REVISION`), else from `space.json` beside this file. The tabs follow the checkpoint:

- autoregressive (IGPTForCausalImageModeling): unconditional samples, image completion (keep the top rows of a photo,
  sample the rest N times, shown beside the original), and nearest neighbours by probe features. A prior on VQ-VAE
  codes (the VQ-VAE in the checkpoint's `vqvae/` folder) samples and completes rows of codes; its pictures are the
  VQ-VAE's decodings, and "the original" is the VQ-VAE's reconstruction of the photo;
- classifier (IGPTForImageClassification): the top-5 labels of a photo;
- BERT or bare trunk: nearest neighbours by probe features.

The checkpoint runs through `EndpointHandler` (handler.py, the Inference Endpoints handler), which loads the
checkpoint's own code (trust_remote_code=True): sampling is the checkpoint's pipeline on `model.generate()`'s defaults
(IGPT's image decoder on the CPU). Bad uploads (not an image, too large) get a message in the page as soon as they arrive.
"""

import argparse
import contextlib
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
from huggingface_hub import snapshot_download
from transformers.generation import BaseStreamer


HERE = Path(__file__).resolve().parent
if __package__:  # the checkout: `python -m hub_cards.space.app`, or imported as hub_cards.space.app
    from ..handler import MAX_IMAGES, EndpointHandler, read_image
elif (HERE / "handler.py").is_file():  # a Space: write_space ships handler.py beside app.py, which runs as a script
    from handler import MAX_IMAGES, EndpointHandler, read_image
else:
    raise SystemExit(f"{HERE / 'handler.py'} is missing: in the checkout, run `python -m hub_cards.space.app` from its "
                     "root")


DISPLAY_SIZE = 160  # pixels a side for the model's small pictures (nearest-neighbour upscaling keeps them sharp)
TILES = (2, 3)  # each example photo is cut into rows x columns tiles: the neighbours' gallery


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and outputs


def photo_picker(prefix: str, examples: list[list[str]]) -> gr.File:
    """An upload field with a preview and the example photos; returns the field (callbacks get its file path).

    A file field, not `gr.Image`: gradio decodes an image upload before any callback runs and answers a file that is not
    an image with a bare "Error"; here the app reads the file itself and says what is wrong as soon as it arrives."""
    photo = gr.File(label="Photo (PNG, JPEG, WebP, ...)", file_types=["image"], elem_id=f"{prefix}_photo")
    preview = gr.Image(label="Photo", interactive=False, height=240, elem_id=f"{prefix}_preview")
    gr.Examples(examples, inputs=photo, label="Example photos")
    photo.change(shows_errors(preview_photo), photo, preview)
    return photo


def preview_photo(path: str | None) -> PIL.Image.Image | None:
    return None if path is None else open_photo(path)


def open_photo(path: str | None) -> PIL.Image.Image:
    """The uploaded or example photo, checked by the handler's rules; a non-RGB one is read as RGB, with a note."""
    if path is None:
        raise gr.Error("Upload a photo or pick an example first.")
    image = read_image(Path(path).read_bytes())  # ValueError naming the problem (too large, not an image)
    if image.mode != "RGB":
        note = "transparent pixels are composited onto white" if "A" in image.getbands() else "read as RGB"
        gr.Warning(f"The photo is a {image.mode} image: {note}.")
    return image


def shows_errors(callback):
    """Bad input raises ValueError (handler.py, the pipeline, generate()); the page shows its message."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def enlarge(image: PIL.Image.Image) -> PIL.Image.Image:
    scale = max(1, DISPLAY_SIZE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), PIL.Image.Resampling.NEAREST)


class TokenProgress(BaseStreamer):
    """A `generate()` streamer that moves a gradio progress bar as tokens (pixels or VQ-VAE codes, `unit`) are
    sampled, one update per row of the token grid."""

    def __init__(self, progress: gr.Progress, new_tokens: int, width: int, unit: str = "pixels"):
        self.progress, self.new_tokens, self.width, self.unit, self.done = progress, new_tokens, width, unit, 0

    def put(self, value):
        if value.ndim > 1:  # transformers' loop first hands over the prompt; the tokens come one (B,) step at a time
            return
        self.done += 1
        if self.done % self.width == 0 or self.done == self.new_tokens:
            self.progress(self.done / self.new_tokens, desc=f"sampled {self.done} of {self.new_tokens} {self.unit}")

    def end(self):
        pass


def example_photos() -> dict[str, Path]:
    """scikit-learn's two sample photographs, written once as JPEG files (gradio's examples are files)."""
    from sklearn.datasets import load_sample_images

    folder = Path(tempfile.gettempdir()) / "igpt_space_examples"
    folder.mkdir(exist_ok=True)
    photos = load_sample_images()
    paths = {}
    for filename, pixels in zip(photos.filenames, photos.images):
        path = folder / Path(filename).name
        if not path.is_file():
            PIL.Image.fromarray(pixels).save(path, quality=95)
        paths[path.stem] = path
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# The tabs


class Demo:
    """The callbacks of every tab, around one loaded checkpoint."""

    def __init__(self, handler: EndpointHandler, name: str):
        self.handler, self.name = handler, name
        self.examples = example_photos()
        self.tiles = [
            (name, tile)
            for name, path in self.examples.items()
            for tile in cut_into_tiles(PIL.Image.open(path).convert("RGB"), *TILES)
        ]
        self.tile_features = {}  # layer -> (tiles, d) unit-norm probe features

    @property
    def token_unit(self) -> str:
        """What the model's tokens are: "pixels" (palette colours) or "codes" (a VQ-VAE's)."""
        return "pixels" if self.handler.vqvae is None else "codes"

    def quantized(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """What the model sees: the photo resized and mapped to the checkpoint's palette, or the VQ-VAE's
        reconstruction of the photo from its codes."""
        return self.handler.reconstruct([image])[0]

    def sample(self, num_images, temperature, top_k, seed, progress=gr.Progress()):
        height, width = self.handler.grid_size
        streamer = TokenProgress(progress, height * width, width, self.token_unit)
        images = self.handler.sample(
            num_images=int(num_images), seed=int(seed), temperature=float(temperature), top_k=int(top_k),
            streamer=streamer,
        )
        return [(enlarge(image), f"sample {index + 1}") for index, image in enumerate(images)]

    def complete(self, photo, rows_kept, num_images, temperature, top_k, seed, progress=gr.Progress()):
        """`rows_kept` rows of the token grid (pixels, or a prior's VQ-VAE codes) kept, the rest sampled."""
        image = open_photo(photo)
        height, width = self.handler.grid_size
        rows_kept = int(rows_kept)
        if not 0 <= rows_kept < height:
            raise ValueError(
                f"rows to keep must lie in [0, {height - 1}] for {height} rows of {self.token_unit}, got {rows_kept}"
            )
        original = self.quantized(image)
        prompt = np.array(original)  # (H, W, 3): the pixels of the kept rows of tokens stay, the rest goes grey
        prompt[rows_kept * self.handler.image_size[0] // height :] = 128
        streamer = TokenProgress(progress, (height - rows_kept) * width, width, self.token_unit)
        completions = self.handler.complete(
            image, num_images=int(num_images), prompt_fraction=rows_kept / height, seed=int(seed),
            temperature=float(temperature), top_k=int(top_k), streamer=streamer,
        )
        if self.handler.vqvae is None:
            shown = [(original, "original (palette)"), (PIL.Image.fromarray(prompt), f"top {rows_kept} rows kept")]
        else:
            shown = [(original, "original (VQ-VAE reconstruction)"),
                     (PIL.Image.fromarray(prompt), f"top {rows_kept} of {height} code rows kept")]
        shown += [(completion, f"completion {index + 1}") for index, completion in enumerate(completions)]
        return [(enlarge(picture), caption) for picture, caption in shown]

    def classify(self, photo):
        labels = self.handler.classify(open_photo(photo), top_k=5)
        return {entry["label"]: entry["score"] for entry in labels}

    def neighbours(self, photo, layer):
        query = self.handler.features([open_photo(photo)], int(layer))  # (1, d)
        tiles = self.features_of_tiles(int(layer))  # (n, d)
        similarity = (tiles @ (query / query.norm(dim=-1, keepdim=True)).T)[:, 0]  # (n,) cosine
        order = similarity.argsort(descending=True)[:5]
        return [(self.tiles[index][1], f"{self.tiles[index][0]} {similarity[index]:.2f}") for index in order]

    def features_of_tiles(self, layer: int):
        if layer not in self.tile_features:
            features = self.handler.features([tile for _, tile in self.tiles], layer)  # (n, d)
            self.tile_features[layer] = features / features.norm(dim=-1, keepdim=True)
        return self.tile_features[layer]


def cut_into_tiles(image: PIL.Image.Image, rows: int, columns: int):
    """The tiles of a rows x columns grid over the image, row by row."""
    height, width = image.height // rows, image.width // columns
    for row in range(rows):
        for column in range(columns):
            yield image.crop((column * width, row * height, (column + 1) * width, (row + 1) * height))


def build_demo(handler: EndpointHandler, name: str) -> gr.Blocks:
    """The app for one loaded checkpoint; its tabs follow `handler.kind`."""
    demo_state = Demo(handler, name)
    config, (height, width), (grid_height, grid_width) = handler.config, handler.image_size, handler.grid_size
    if handler.vqvae is None:
        tokens = f"{height} x {width} images, a {config.vocab_size - 1}-colour palette, pixels in raster order"
        rows_label = f"Rows to keep (of {grid_height})"
    else:
        tokens = (
            f"{height} x {width} images as a {grid_height} x {grid_width} grid of VQ-VAE codes from a "
            f"{config.vocab_size - 1}-code codebook, codes in raster order (the VQ-VAE's decoder draws the pictures)"
        )
        rows_label = f"Rows of codes to keep (of {grid_height}; each is {height // grid_height} pixel rows)"
    examples = [[str(path)] for path in demo_state.examples.values()]
    with gr.Blocks(title=f"Image GPT: {name}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {name}\n**Image GPT** ({handler.kind} checkpoint, {handler.model.num_parameters():,} parameters, "
            f"{config.num_hidden_layers} layers): {tokens}. Chen et al., *Generative Pretraining from Pixels* "
            "(ICML 2020)."
        )
        if handler.kind == "generative":
            with gr.Tab("Samples", id="samples"):
                with gr.Row():
                    num_samples = gr.Slider(1, MAX_IMAGES, value=8, step=1, label="Number of images")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                    top_k = gr.Slider(0, config.vocab_size - 1, value=min(64, config.vocab_size - 1), step=1,
                                      label="Top-k (0: off)")
                    seed = gr.Number(0, precision=0, label="Seed")
                sample_button = gr.Button("Sample", variant="primary")
                samples = gr.Gallery(label="Samples", columns=8, height="auto", elem_id="samples")
                sample_button.click(shows_errors(demo_state.sample), [num_samples, temperature, top_k, seed], samples)
            with gr.Tab("Complete a photo", id="complete"):
                with gr.Row():
                    with gr.Column():
                        photo = photo_picker("complete", examples)
                    with gr.Column():
                        rows_kept = gr.Slider(0, grid_height - 1, value=grid_height // 2, step=1, label=rows_label)
                        num_completions = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Completions")
                        temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                        top_k = gr.Slider(0, config.vocab_size - 1, value=min(64, config.vocab_size - 1), step=1,
                                          label="Top-k (0: off)")
                        seed = gr.Number(0, precision=0, label="Seed")
                        complete_button = gr.Button("Complete", variant="primary", elem_id="complete_button")
                completions = gr.Gallery(label="Original, prompt and completions", columns=6, height="auto",
                                         elem_id="completions")
                complete_button.click(
                    shows_errors(demo_state.complete),
                    [photo, rows_kept, num_completions, temperature, top_k, seed], completions,
                )
        if handler.kind == "classifier":
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column():
                        photo = photo_picker("classify", examples)
                        classify_button = gr.Button("Classify", variant="primary", elem_id="classify_button")
                    labels = gr.Label(num_top_classes=5, label="Top-5 labels", elem_id="labels")
                classify_button.click(shows_errors(demo_state.classify), photo, labels)
        if handler.kind in ("generative", "features"):
            with gr.Tab("Nearest neighbours", id="neighbours"):
                gr.Markdown(
                    f"The five closest of {len(demo_state.tiles)} tiles cut from the example photos, with their cosine "
                    "similarity: probe features f^l, the mean over positions of layer l's normalised hidden state."
                )
                with gr.Row():
                    with gr.Column():
                        photo = photo_picker("neighbours", examples)
                        layer = gr.Slider(0, config.num_hidden_layers, value=handler.default_layer, step=1, label="Layer l")
                        neighbours_button = gr.Button("Find neighbours", variant="primary", elem_id="neighbours_button")
                    neighbours = gr.Gallery(label="Nearest tiles", columns=5, height="auto", elem_id="neighbours")
                neighbours_button.click(shows_errors(demo_state.neighbours), [photo, layer], neighbours)
    return demo


# ---------------------------------------------------------------------------------------------------------------------
# Command line / Space entry point


def load_handler(model: str, revision: str | None = None) -> EndpointHandler:
    """A checkpoint folder, or a Hub repo id (downloaded, or read from the cache with HF_HUB_OFFLINE=1)."""
    folder = model if Path(model).is_dir() else snapshot_download(model, revision=revision)
    return EndpointHandler(folder)


def space_settings() -> dict:
    path = HERE / "space.json"  # written by hub_cards.space.write_space
    return json.loads(path.read_text()) if path.is_file() else {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = space_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("IGPT_MODEL") or settings.get("model"),
                        help="checkpoint folder or Hub repo id (default: $IGPT_MODEL, then space.json)")
    parser.add_argument("--revision", default=os.environ.get("IGPT_REVISION") or settings.get("revision"),
                        help="commit of the repo to load: pin it, the app runs the repository's code")
    parser.add_argument("--host", default=None, help="address to serve on (gradio's default: 127.0.0.1, 0.0.0.0 in a Space)")
    parser.add_argument("--port", type=int, default=None, help="port (gradio's default: 7860)")
    parser.add_argument("--no_warmup", action="store_true",
                        help="skip sampling one image before serving (it compiles the CPU image decoder once, so that "
                             "the first visitor does not wait for it)")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("name a checkpoint: --model PATH_OR_REPO, the IGPT_MODEL variable, or space.json")
    return args


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import modeling_igpt  # noqa: F401  installed: its registered classes serve checkpoints without published code
    handler = load_handler(args.model, args.revision)
    if handler.kind == "generative" and not args.no_warmup:
        started = time.perf_counter()
        handler.sample(num_images=1, seed=0)  # the decode step compiles on the first long request (minutes on a CPU)
        print(f"Warmed up in {time.perf_counter() - started:.0f} s: one image sampled, the image decoder compiled")
    demo = build_demo(handler, name=Path(args.model.rstrip("/")).name)
    demo.queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
