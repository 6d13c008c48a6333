"""Image GPT models for transformers. Importing this package registers every class with the Auto* factories."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
)

from .configuration_igpt import IGPTConfig
from .modeling_igpt import (
    IGPTForCausalImageModeling,
    IGPTForImageClassification,
    IGPTForMaskedImageModeling,
    IGPTModel,
    IGPTPreTrainedModel,
)
from .pipeline_igpt import IGPTImageGenerationPipeline  # registers "unconditional-image-generation"


AutoConfig.register("igpt", IGPTConfig, exist_ok=True)
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
    "IGPTConfig",
    "IGPTPreTrainedModel",
    "IGPTModel",
    "IGPTForCausalImageModeling",
    "IGPTForMaskedImageModeling",
    "IGPTForImageClassification",
    "IGPTImageGenerationPipeline",
]
