"""Pictures <-> Image GPT token ids: `IGPTImageProcessor` (colour-palette tokenizer) and `fit_palette` (k-means)."""

import sys
import types

from transformers import AutoImageProcessor

from .image_processing_igpt import IGPTImageProcessor, make_image_grid
from .palette import fit_palette


# transformers 5.24 accepts a model-type string as the key, so this needs no config class (which lives in
# modeling_igpt, off limits here): `AutoImageProcessor` then resolves `"image_processor_type": "IGPTImageProcessor"`.
AutoImageProcessor.register("igpt", image_processor_classes={"pil": IGPTImageProcessor}, exist_ok=True)


class _Package(types.ModuleType):
    """`image_processing.fit_palette` is the function, although the command line is the submodule of the same name
    (`python -m image_processing.fit_palette`): importing that submodule must not replace the function here."""

    def __setattr__(self, name, value):
        if not (name == "fit_palette" and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["IGPTImageProcessor", "fit_palette", "make_image_grid"]
