"""Pictures <-> Image GPT token ids: `IGPTImageProcessor` (colour-palette tokenizer) and `fit_palette` (k-means).

`python -m image_processing` fits a palette on a dataset from the command line (`image_processing/__main__.py`).
"""

from transformers import AutoImageProcessor

from .image_processing_igpt import IGPTImageProcessor, make_image_grid
from .palette import fit_palette


# transformers 5.24 accepts a model-type string as the key, so this needs no config class (which lives in
# modeling_igpt, off limits here): `AutoImageProcessor` then resolves `"image_processor_type": "IGPTImageProcessor"`.
AutoImageProcessor.register("igpt", image_processor_classes={"pil": IGPTImageProcessor}, exist_ok=True)

__all__ = ["IGPTImageProcessor", "fit_palette", "make_image_grid"]
