"""Image GPT models for transformers. Importing this package registers every class with the Auto* factories.

Beside the models: `ImageTokenizer` (images <-> token ids, palette or VQ-VAE), the data collators for each objective
and what training runs add to `Trainer` (`modeling_igpt.training`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
)

import image_processing  # noqa: F401  registers IGPTImageProcessor with AutoImageProcessor

from .compatibility import check_model_fits_tokenizer
from .configuration_igpt import IGPTConfig
from .configuration_vqvae import IGPTVQVAEConfig
from .data_collators import ClassificationCollator, PretrainingCollator
from .image_tokenizer import ImageTokenizer, random_pad_crop_flip, tokenize_transform
from .modeling_igpt import (
    IGPTForCausalImageModeling,
    IGPTForImageClassification,
    IGPTForMaskedImageModeling,
    IGPTModel,
    IGPTPreTrainedModel,
    model_inputs,
)
from .modeling_vqvae import IGPTVQVAEModel, IGPTVQVAEOutput, IGPTVQVAEPreTrainedModel, IGPTVQVAEQuantizer
from .pipeline_igpt import IGPTImageGenerationPipeline  # registers "unconditional-image-generation"
from .training import BitsPerDimTrainer, FiniteTrainer, NonFiniteLossError, bits_per_dim, last_complete_checkpoint


AutoConfig.register("igpt", IGPTConfig, exist_ok=True)
AutoConfig.register("igpt_vqvae", IGPTVQVAEConfig, exist_ok=True)
AutoModel.register(IGPTVQVAEConfig, IGPTVQVAEModel, exist_ok=True)
IGPTConfig.register_for_auto_class()
for auto_class, model_class in (
    (AutoModel, IGPTModel),
    (AutoModelForCausalLM, IGPTForCausalImageModeling),
    (AutoModelForMaskedImageModeling, IGPTForMaskedImageModeling),
    (AutoModelForImageClassification, IGPTForImageClassification),
):
    auto_class.register(IGPTConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_class.__name__)

__all__ = [
    "check_model_fits_tokenizer",
    "ImageTokenizer",
    "tokenize_transform",
    "random_pad_crop_flip",
    "model_inputs",
    "PretrainingCollator",
    "ClassificationCollator",
    "bits_per_dim",
    "FiniteTrainer",
    "BitsPerDimTrainer",
    "NonFiniteLossError",
    "last_complete_checkpoint",
    "IGPTConfig",
    "IGPTPreTrainedModel",
    "IGPTModel",
    "IGPTForCausalImageModeling",
    "IGPTForMaskedImageModeling",
    "IGPTForImageClassification",
    "IGPTImageGenerationPipeline",
    "IGPTVQVAEConfig",
    "IGPTVQVAEPreTrainedModel",
    "IGPTVQVAEModel",
    "IGPTVQVAEOutput",
    "IGPTVQVAEQuantizer",
]
