"""Image GPT image processor: pictures <-> token ids (Chen et al., 2020, "Generative Pretraining from Pixels").

The paper ("Context Reduction") shrinks each image to the input resolution and replaces every RGB pixel by the index
of its nearest colour cluster, found by k-means (k = 512) over the pixels of the training set with values in [-1, 1];
the sequence is read in raster order. `IGPTImageProcessor` does exactly that and the way back (`decode`).

This file is copied to the Hugging Face Hub next to a model, so it imports only numpy, PIL, torch and transformers.
"""

import functools
import io

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import (
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
    to_numpy_array,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType


class IGPTImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    clusters (`np.ndarray`, `list[list[float]]` or `torch.Tensor` of shape `(n_clusters, 3)`, *optional*):
        The colour palette in the processed pixel space ([-1, 1] with the default rescale and normalisation).
    do_color_quantize (`bool`, *optional*, defaults to `True`):
        Return `input_ids` (nearest cluster per pixel); if `False`, return float `pixel_values` (B, 3, H, W).
    """

    clusters: np.ndarray | list | torch.Tensor | None
    do_color_quantize: bool


# ---------------------------------------------------------------------------------------------------------------------
# Any picture -> (H, W, 3) uint8 RGB


CHANNEL_COUNTS = (1, 3, 4)  # gray, RGB, RGBA


def to_rgb_uint8(image, input_data_format: str | ChannelDimension | None = None) -> np.ndarray:
    """Convert a PIL image (any mode), numpy array, torch tensor or encoded file (PNG/JPEG... `bytes`, or a
    `{"bytes": ..., "path": ...}` dict as an undecoded `datasets.Image` column gives) to an (H, W, 3) uint8 RGB array.

    Arrays may be (H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4} (4 = RGBA, composited onto white by transformers'
    `convert_to_rgb`); which axis holds the channels is decided by `channel_axis` (numpy channels-last, torch
    channels-first, unless `input_data_format` says otherwise). Value ranges by dtype (`pixels_to_uint8`): uint8 as is;
    uint16 (and PIL "I;16"/"I") scaled by 255/65535; other integers must lie in [0, 255]; floats (and PIL "F") must lie
    in [0, 1] and are rounded to the nearest 8-bit level; bool is 0/255.
    """
    if is_encoded_image(image):
        image = decode_image_file(image)
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"Got a zero-size image of size {image.size}.")
        if image.mode == "RGB":  # what convert_to_rgb would copy: the common case, kept fast for tokenization
            return np.asarray(image)
        if image.mode.startswith("I"):  # 16-bit grayscale: scaled as uint16 below
            pixels = np.asarray(image)
            if pixels.min() < 0 or pixels.max() > 65535:
                raise ValueError(f"Mode {image.mode} pixels must lie in [0, 65535].")
            image = pixels.astype(np.uint16)
        elif image.mode == "F":  # float pixels: checked to lie in [0, 1] below
            image = np.asarray(image)
        else:  # 8-bit modes; transparency is composited onto white
            return convert_to_rgb(image, return_numpy=True)
    channels_first = isinstance(image, torch.Tensor)  # torch's convention; numpy's is channels-last
    if channels_first and image.dtype == torch.bfloat16:
        image = image.float()  # numpy has no bfloat16
    array = to_numpy_array(image) if channels_first else np.asarray(image)
    if array.size == 0:
        raise ValueError(f"Got a zero-size image of shape {array.shape}.")
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        array = np.moveaxis(array, channel_axis(array, input_data_format, channels_first), -1)
    else:
        raise ValueError(f"An image must have 2 or 3 dimensions, got shape {array.shape}.")
    return convert_to_rgb(pixels_to_uint8(array), return_numpy=True, input_data_format=ChannelDimension.LAST)


def channel_axis(image: np.ndarray, input_data_format=None, channels_first: bool = False) -> int:
    """The channel axis (0 or -1) of a 3-D image array: the one rule the processor and `fit_palette` share.

    1. `input_data_format` ("channels_first" / "channels_last"), when given, decides (and must point at 1, 3 or 4).
    2. Otherwise, when both ends of the shape could hold channels (1, 3 or 4 entries: a 4 x 4 x 3 or 3 x 10 x 3 image),
       the container's convention decides: numpy arrays (and nested lists) are channels-last, as `np.asarray(pil_image)`
       is; torch tensors are channels-first, as torchvision's are (`channels_first=True`).
    3. When only one end can hold channels, it is that one (a (3, 32, 32) array, a (32, 32, 3) tensor), as transformers'
       `infer_channel_dimension_format` finds.

    In case 2 transformers' `infer_channel_dimension_format` takes the first axis (with a log warning), which reads
    small channels-last numpy images wrong; this processor never guesses that way.
    """
    shape = image.shape
    first, last = shape[0] in CHANNEL_COUNTS, shape[-1] in CHANNEL_COUNTS
    if input_data_format is None and first and last:
        input_data_format = ChannelDimension.FIRST if channels_first else ChannelDimension.LAST
    elif input_data_format is None and (first or last):
        input_data_format = infer_channel_dimension_format(image, num_channels=CHANNEL_COUNTS)
    elif input_data_format is None:
        raise ValueError(f"An image must have 1, 3 or 4 channels on its first or last axis, got shape {tuple(shape)}.")
    axis = 0 if ChannelDimension(input_data_format) == ChannelDimension.FIRST else -1
    if shape[axis] not in CHANNEL_COUNTS:
        raise ValueError(
            f"input_data_format={ChannelDimension(input_data_format).value!r} puts {shape[axis]} channels on axis "
            f"{axis} of an image of shape {tuple(shape)}; images have 1, 3 or 4 channels."
        )
    return axis


def pixels_to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixels of any dtype -> uint8, refusing values outside the dtype's range (transformers' conversions would
    truncate or wrap them silently)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.rint(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"Integer {array.dtype} pixels must lie in [0, 255] (got [{array.min()}, {array.max()}]); "
                "pass 16-bit images as uint16."
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("Float pixels must be finite (got NaN or infinity).")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"Float pixels must lie in [0, 1] (got [{array.min()}, {array.max()}]).")
        return np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    raise ValueError(f"Unsupported pixel dtype {array.dtype}.")


def is_encoded_image(image) -> bool:
    """Encoded image file contents: raw bytes, or a dict with "bytes" / "path" (an undecoded `datasets.Image`)."""
    return isinstance(image, (bytes, bytearray, memoryview)) or (
        isinstance(image, dict) and ("bytes" in image or "path" in image)
    )


def decode_image_file(image) -> PIL.Image.Image:
    """PNG/JPEG/... bytes, or `{"bytes": bytes or None, "path": str or None}` -> a loaded PIL image (transformers'
    `load_image` takes paths, URLs and base64 text, not bytes)."""
    if isinstance(image, dict):
        source = image.get("bytes") if image.get("bytes") is not None else image.get("path")
        if source is None:
            raise ValueError(f"An image dict needs 'bytes' or 'path', got {image!r}.")
    else:
        source = bytes(image)
    try:
        decoded = PIL.Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        decoded.load()
    except (OSError, PIL.UnidentifiedImageError) as error:
        what = f"{len(source)} bytes" if isinstance(source, (bytes, bytearray)) else repr(source)
        raise ValueError(f"Could not decode an image from {what}: {error}") from None
    return decoded


def flattenable(image):
    """One input as transformers' flattening (`make_flat_list_of_images`) takes it: an encoded file decoded, a 2-D
    (grayscale) array given its channel axis where its convention puts it (numpy last, torch first), so that
    `channel_axis` reads a 3 x 4 gray image as gray."""
    if is_encoded_image(image):
        return decode_image_file(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2:
        return image[None] if isinstance(image, torch.Tensor) else image[..., None]
    return image


# ---------------------------------------------------------------------------------------------------------------------
# Resize: shorter side to the target, centre crop (paper's evaluation protocol), or plain resize


def resize_rgb(image: np.ndarray, height: int, width: int, resample, center_crop: bool) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8 with PIL.

    With `center_crop`, scale so the image covers the target (shorter side matches) and keep the centre; the crop and
    the resampling happen in one PIL call (`box=`). Otherwise stretch to the target, as transformers' ImageGPT does.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    box = (0.0, 0.0, float(w), float(h))
    if center_crop:
        scale = max(height / h, width / w)
        crop_w, crop_h = min(w, width / scale), min(h, height / scale)  # one of them is w or h
        box = ((w - crop_w) / 2, (h - crop_h) / 2, (w + crop_w) / 2, (h + crop_h) / 2)
    return np.asarray(PIL.Image.fromarray(image).resize((width, height), resample=resample, box=box))


# ---------------------------------------------------------------------------------------------------------------------
# Quantization: exact nearest cluster per pixel


def nearest_cluster(pixels: np.ndarray, clusters: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N, 3) processed pixels, (K, 3) clusters -> (N,) int64 index of the nearest cluster.

    Same formula, dtypes and rounding as transformers' ImageGPT `squared_euclidean_distance` (|a|^2 - 2ab + |b|^2,
    float64 when the clusters are float64; in place, which rounds identically), and argmin keeps the lowest index
    among equal distances.
    """
    b = clusters.T  # (3, K)
    b2 = np.sum(np.square(b), axis=0)  # (K,)
    out = np.empty(len(pixels), dtype=np.int64)
    buffer = np.empty((min(chunk, len(pixels)), len(clusters)), dtype=np.result_type(pixels, clusters))
    for start in range(0, len(pixels), chunk):
        a = pixels[start : start + chunk]  # (n, 3)
        d = np.matmul(a.astype(buffer.dtype), b, out=buffer[: len(a)])  # (n, K): ab
        d *= -2
        d += np.sum(np.square(a), axis=1)[:, None]  # |a|^2 - 2ab
        d += b2  # ... + |b|^2
        out[start : start + chunk] = np.argmin(d, axis=1)
    return out


def pack_colours(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int32 colour code r * 2^16 + g * 2^8 + b."""
    return (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]


def unpack_colours(codes: np.ndarray) -> np.ndarray:
    """(...) colour codes -> (..., 3) uint8 RGB."""
    return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8)


def _nearest_for_colours(codes: np.ndarray, levels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(n,) distinct colour codes -> (n,) nearest-cluster ids."""
    return nearest_cluster(levels[np.arange(3), unpack_colours(codes)], clusters)


TABLE_MIN_PIXELS = 1 << 16  # smaller calls (a pipeline's one image) search directly: cheaper than a table's first pages


@functools.lru_cache(maxsize=2)
def colour_table(palette: bytes, n_clusters: int) -> np.ndarray:
    """(2^24,) a palette's answers for the 256^3 8-bit colours, filled in by `quantize` as colours are met: 0 = not
    computed yet, else id + 1. `palette` is the processed levels' and the clusters' bytes.

    Kept here, not on the processor, so that pickling or saving a processor never carries 32 MB; at most two palettes
    are kept, and `colour_table.cache_clear()` frees them (the next large batch then starts a palette's first pass).
    """
    return np.zeros(1 << 24, dtype=np.uint16 if n_clusters < 65535 else np.uint32)


def quantize(images: np.ndarray, levels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int64 nearest-cluster ids; same ids as `nearest_cluster` on the processed pixels."""
    codes = pack_colours(images)  # (...)
    if codes.size < TABLE_MIN_PIXELS:
        colours, inverse = np.unique(codes, return_inverse=True)
        return _nearest_for_colours(colours, levels, clusters)[inverse].reshape(codes.shape)
    table = colour_table(levels.tobytes() + clusters.tobytes(), len(clusters))
    ids = table[codes]
    missing = ids == 0
    if missing.any():
        new = np.unique(codes[missing])  # (n,) colours never seen with this palette
        table[new] = _nearest_for_colours(new, levels, clusters) + 1
        ids = table[codes]
    return ids.astype(np.int64) - 1


def check_clusters(clusters, low: float = -1.0, high: float = 1.0) -> np.ndarray | None:
    """Validate a palette: (K, 3), finite, within [low, high] (the processed pixel range). Returns float64."""
    if clusters is None:
        return None
    if isinstance(clusters, torch.Tensor):
        clusters = clusters.detach().cpu().double().numpy()
    try:
        clusters = np.array(clusters, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"clusters must be a numeric (n_clusters, 3) array: {err}") from None
    if clusters.ndim != 2 or clusters.shape[1] != 3 or len(clusters) == 0:
        raise ValueError(f"clusters must have shape (n_clusters, 3) with n_clusters >= 1, got {clusters.shape}.")
    if not np.isfinite(clusters).all():
        raise ValueError("clusters contain NaN or infinite values.")
    eps = 1e-6
    if clusters.min() < low - eps or clusters.max() > high + eps:
        raise ValueError(
            f"clusters must lie in the processed pixel range [{low:g}, {high:g}] "
            f"(got [{clusters.min():g}, {clusters.max():g}]); ImageGPT palettes are stored in [-1, 1]."
        )
    return clusters


# ---------------------------------------------------------------------------------------------------------------------
# Grids


def make_image_grid(images, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> PIL.Image.Image:
    """Tile equally sized images (PIL or (H, W, 3) uint8 arrays) into one PIL image, `nrow` images per row."""
    arrays = [to_rgb_uint8(image) for image in images]
    if not arrays:
        raise ValueError("make_image_grid needs at least one image.")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}.")
    h, w = arrays[0].shape[:2]
    if any(a.shape[:2] != (h, w) for a in arrays):
        raise ValueError("make_image_grid needs images of one size.")
    ncol, nrows = min(nrow, len(arrays)), -(-len(arrays) // nrow)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, 3), pad_value, dtype=np.uint8)
    for i, a in enumerate(arrays):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = a
    return PIL.Image.fromarray(grid)


# ---------------------------------------------------------------------------------------------------------------------


# Keys a saved preprocessor_config.json holds about itself rather than about preprocessing.
SAVED_METADATA = ("image_processor_type", "feature_extractor_type", "processor_class", "_processor_class", "auto_map")


def check_convert_rgb(do_convert_rgb: bool | None):
    """Every image is made RGB (the palette's colour space): `do_convert_rgb=False` would be ignored, so it is refused."""
    if do_convert_rgb is False:
        raise ValueError(
            "do_convert_rgb=False is not supported: the palette clusters RGB colours, so every image is converted to RGB "
            "(grayscale and RGBA included)."
        )


class IGPTImageProcessor(PilBackend):
    r"""
    Image GPT image processor: any picture -> RGB -> resize -> nearest palette colour per pixel -> `input_ids` of
    shape (batch, height * width) in raster order, and `decode` for the way back.

    Args:
        clusters (`(n_clusters, 3)` array, list or tensor, *optional*):
            The colour palette in the processed pixel space ([-1, 1] with the default rescale and normalisation), as
            in transformers' `ImageGPTImageProcessor`. Fit one with `image_processing.fit_palette`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 32, "width": 32}`):
            The input resolution.
        do_center_crop (`bool`, *optional*, defaults to `True`):
            Resize so the shorter side matches `size`, then keep the centre (the paper's protocol). `False` stretches
            the image to `size` like transformers' ImageGPT (set automatically when loading its configs).
        do_color_quantize (`bool`, *optional*, defaults to `True`):
            `False` returns float `pixel_values` (B, 3, H, W) instead of `input_ids`.
        resample, do_resize, do_rescale, rescale_factor, do_normalize, image_mean, image_std:
            As in every transformers image processor; the defaults map 8-bit pixels to [-1, 1] (x / 127.5 - 1).

    The vocabulary of a model using this processor is `n_clusters + 1`: the start-of-sequence token is
    `start_token_id == n_clusters`, as in ImageGPT.

    Inputs: PIL images, numpy arrays, torch tensors, encoded files (PNG/JPEG bytes or `{"bytes", "path"}` dicts), paths
    or URLs, alone or in lists. Channel order follows one rule (`channel_axis`, shared with `fit_palette`): when both
    ends of an array's shape could hold 1, 3 or 4 channels, numpy arrays are channels-last and torch tensors
    channels-first; otherwise the end that can hold them is the channel axis; `input_data_format` overrides both.

    Tokens equal transformers' `ImageGPTImageProcessorPil` for the same palette and 8-bit input: each pixel is decided
    by the same float64 arithmetic (palettes are stored as float64, as JSON gives them). Two known differences: a
    float32 palette passed to transformers as an array is compared in float32 there, so a pixel within ~1e-7 of a tie
    may go the other way; and float images that need resizing are rounded to 8 bits here, truncated there.
    Batches of at least 65,536 pixels read their answers from a per-palette table of all 256^3 colours, filled in as
    colours are first met (steady-state tokenization is a table lookup); smaller calls search directly.
    """

    model_input_names = ["input_ids"]
    valid_kwargs = IGPTImageProcessorKwargs
    clusters = None
    do_color_quantize = True
    size = {"height": 32, "width": 32}
    do_resize = True
    do_center_crop = True
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True

    def __init__(self, clusters=None, **kwargs: Unpack[IGPTImageProcessorKwargs]):
        # transformers keeps unknown keywords as unused attributes (and saves them): a misspelt `do_centre_crop=False`
        # would vanish. Only the declared keywords and what a saved config records about itself are taken.
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__) - set(SAVED_METADATA))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown argument(s) {unknown}; it takes "
                f"{sorted(self.valid_kwargs.__annotations__)}."
            )
        super().__init__(clusters=clusters, **kwargs)
        self.clusters = self._check_clusters(self.clusters)
        check_convert_rgb(self.do_convert_rgb)

    @classmethod
    def from_dict(cls, image_processor_dict, **kwargs):
        # transformers' ImageGPT configs stretch images to `size`: keep that meaning when loading them.
        legacy_type = image_processor_dict.get("image_processor_type") or image_processor_dict.get(
            "feature_extractor_type", ""
        )
        if legacy_type.startswith("ImageGPT") and "do_center_crop" not in image_processor_dict:
            image_processor_dict = {**image_processor_dict, "do_center_crop": False}
        return super().from_dict(image_processor_dict, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        if output.get("clusters") is not None:
            output["clusters"] = np.asarray(output["clusters"]).tolist()
        return output

    @property
    def n_clusters(self) -> int | None:
        """K, the palette size (None without a palette)."""
        return None if self.clusters is None else len(self.clusters)

    @property
    def start_token_id(self) -> int | None:
        """The start-of-sequence token, K (the model's vocabulary is K + 1)."""
        return self.n_clusters

    # -- encoding ------------------------------------------------------------------------------------------------------

    def process_image(self, image, input_data_format=None, **kwargs) -> np.ndarray:
        """One raw image -> (H, W, 3) uint8 RGB (channels last: this processor's own `_preprocess` consumes it)."""
        return to_rgb_uint8(image, input_data_format)

    def _preprocess_image_like_inputs(self, images, *args, **kwargs) -> BatchFeature:
        # The hook transformers documents for custom orchestration (BaseImageProcessor's docstring) around its
        # flattening into one image per entry and `_preprocess`.
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("Got an empty list of images: pass at least one image.")
            images = [flattenable(image) for image in images]
        else:
            images = flattenable(images)
        images = self._prepare_image_like_inputs(images, **kwargs)  # (H, W, 3) uint8 each, by `process_image`
        if len(images) == 0:  # e.g. [[]] or an empty (0, H, W, C) batch
            raise ValueError("Got no images (an empty batch): pass at least one image.")
        return self._preprocess(images, *args, **kwargs)

    def _validate_preprocess_kwargs(self, do_center_crop=None, crop_size=None, **kwargs):
        # transformers checks `do_center_crop` against `crop_size` before any public hook runs, and has no public way
        # to say that this processor crops to `size` (its glpn, gemma4 and kimi_k25 processors override this too).
        super()._validate_preprocess_kwargs(**kwargs)
        check_convert_rgb(kwargs.get("do_convert_rgb"))
        size = kwargs.get("size")
        if kwargs.get("do_resize") and not (size.height and size.width):
            raise ValueError(f"size must have 'height' and 'width', got {dict(size)}.")

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_center_crop: bool,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        return_tensors: str | TensorType | None,
        do_color_quantize: bool = True,
        clusters=None,
        **kwargs,
    ) -> BatchFeature:
        if do_resize:
            images = [resize_rgb(image, size.height, size.width, resample, do_center_crop) for image in images]
        if len({image.shape for image in images}) > 1:
            raise ValueError("Images of different sizes cannot be batched: set do_resize=True.")
        batch = np.stack(images)  # (B, H, W, 3) uint8
        levels = self.pixel_levels(do_rescale, rescale_factor, do_normalize, image_mean, image_std)  # (3, 256)
        if not do_color_quantize:
            pixel_values = levels[np.arange(3), batch].transpose(0, 3, 1, 2)  # (B, 3, H, W) float32
            return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
        clusters = self.clusters if clusters is None else self._check_clusters(clusters)
        if clusters is None:
            raise ValueError("Color quantization needs a palette: pass `clusters` or use fit_palette.")
        input_ids = quantize(batch, levels, clusters).reshape(len(batch), -1)  # (B, H*W) raster order
        return BatchFeature(data={"input_ids": input_ids}, tensor_type=return_tensors)

    def pixel_levels(self, do_rescale, rescale_factor, do_normalize, image_mean, image_std) -> np.ndarray:
        """(3, 256) float32: the processed value of each 8-bit level per channel, by transformers' own `rescale` and
        `normalize`, so that looking pixels up in it gives what those give on the whole image."""
        levels = np.tile(np.arange(256, dtype=np.uint8), (3, 1, 1))  # (3, 1, 256): a channels-first image
        if do_rescale:
            levels = self.rescale(levels, rescale_factor)
        if do_normalize:
            levels = self.normalize(levels, image_mean, image_std)
        return levels[:, 0].astype(np.float32)

    def processed_levels(self) -> np.ndarray:
        """(3, 256) float32: what this processor turns each 8-bit level of each channel into."""
        settings = (self.do_rescale, self.rescale_factor, self.do_normalize, self.image_mean, self.image_std)
        return self.pixel_levels(*settings)

    def _check_clusters(self, clusters) -> np.ndarray | None:
        levels = self.processed_levels()
        return check_clusters(clusters, float(levels.min()), float(levels.max()))

    # -- decoding ------------------------------------------------------------------------------------------------------

    def palette_rgb(self) -> np.ndarray:
        """(K, 3) uint8: each cluster mapped back to 8-bit RGB (undoing normalisation and rescaling)."""
        if self.clusters is None:
            raise ValueError("This processor has no palette (clusters=None).")
        rgb = self.clusters
        if self.do_normalize:
            rgb = rgb * np.asarray(self.image_std) + np.asarray(self.image_mean)
        if self.do_rescale:
            rgb = rgb / self.rescale_factor
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def decode(self, input_ids, height: int | None = None, width: int | None = None, output_type: str = "pil"):
        """Token ids -> images: a list of PIL RGB images, or with `output_type="np"` a (B, H, W, 3) uint8 array.

        `input_ids` (torch, numpy or list) has shape (B, H*W), (H*W,) or (B, H, W), ids in [0, n_clusters) (strip the
        start token first). `height`/`width` default to the processor's `size`.
        """
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}.")
        ids = input_ids.detach().cpu().numpy() if isinstance(input_ids, torch.Tensor) else np.asarray(input_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be integers, got dtype {ids.dtype}.")
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim == 3:
            height, width = height or ids.shape[1], width or ids.shape[2]
        elif ids.ndim == 2:
            height, width = height or self.size.height, width or self.size.width
        else:
            raise ValueError(f"input_ids must have shape (B, H*W), (H*W,) or (B, H, W), got {ids.shape}.")
        if ids[0].size != height * width:
            raise ValueError(
                f"Got {ids[0].size} tokens per image, expected height * width = {height} * {width}; "
                "pass height= and width=."
            )
        ids = ids.reshape(len(ids), height, width).astype(np.int64)
        palette = self.palette_rgb()
        bad = (ids < 0) | (ids >= len(palette))
        if bad.any():
            raise ValueError(
                f"Token id {ids[bad][0]} is outside the palette [0, {len(palette)}) "
                f"(the start-of-sequence token is {len(palette)}: strip it before decoding)."
            )
        pixels = palette[ids]  # (B, H, W, 3)
        return pixels if output_type == "np" else [PIL.Image.fromarray(p) for p in pixels]

    def decode_grid(self, input_ids, nrow: int = 8, padding: int = 2, **decode_kwargs) -> PIL.Image.Image:
        """Token ids (or a list of images) -> one PIL image grid with `nrow` images per row."""
        is_images = isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], PIL.Image.Image)
        images = input_ids if is_images else self.decode(input_ids, **decode_kwargs)
        return make_image_grid(images, nrow=nrow, padding=padding)


IGPTImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["IGPTImageProcessor", "make_image_grid"]
