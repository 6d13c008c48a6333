"""IGPTConfig: the hyperparameters of Image GPT (Chen et al., 2020) as a transformers config."""

import sys

from transformers import PreTrainedConfig


OBJECTIVES = ("autoregressive", "bert")

# Where a Python without this package finds each class (trust_remote_code=True). Written into every saved config, so
# a saved folder names all its entry points, not only the class that saved it.
AUTO_MAP = {
    "AutoConfig": "configuration_igpt.IGPTConfig",
    "AutoModel": "modeling_igpt.IGPTModel",
    "AutoModelForCausalLM": "modeling_igpt.IGPTForCausalImageModeling",
    "AutoModelForMaskedImageModeling": "modeling_igpt.IGPTForMaskedImageModeling",
    "AutoModelForImageClassification": "modeling_igpt.IGPTForImageClassification",
}

# Paper sizes (Section 4): depth, width, heads.
PAPER_SIZES = {
    "s": dict(num_hidden_layers=24, hidden_size=512, num_attention_heads=8),  # iGPT-S, 76M
    "m": dict(num_hidden_layers=36, hidden_size=1024, num_attention_heads=8),  # iGPT-M, 455M
    "l": dict(num_hidden_layers=48, hidden_size=1536, num_attention_heads=16),  # iGPT-L, 1.4B
}


class IGPTConfig(PreTrainedConfig):
    r"""
    Configuration of an Image GPT model.

    Token ids `0 .. vocab_size - 2` are colour clusters (or VQ-VAE codes); id `vocab_size - 1` is the start-of-sequence
    token, as in transformers' `ImageGPTConfig`. The output heads therefore predict `vocab_size - 1` classes.

    Args:
        vocab_size: clusters + 1 start token (512 + 1 in the paper).
        max_position_embeddings: sequence length the learned position embeddings cover (32 * 32 = 1024, 48 * 48 = 2304).
        hidden_size, num_hidden_layers, num_attention_heads: width d, depth L, heads.
        intermediate_size: MLP width, `4 * hidden_size` when `None`.
        hidden_act: activation of the MLP; the paper's `x * sigmoid(1.702 x)` is `"quick_gelu"`.
        layer_norm_eps: epsilon of the mean-free, bias-free norm.
        initializer_range: std of the normal init; residual projections are scaled by `1 / sqrt(2 L)`.
        embedding_dropout, attention_dropout, residual_dropout: 0 in the paper.
        objective: `"autoregressive"` (causal mask) or `"bert"` (no mask, masked input embeddings zeroed).
        mask_probability: BERT masking probability (0.15).
        classifier_pooled_layer: which hidden state `f^l` the classification head pools, `0 .. L` (0 = embeddings,
            L = final normed output); negative values count from the end. `-1` is the paper's fine-tuning setting.
        generative_loss_weight: weight of `L_gen` in the fine-tuning loss `L_clf + w * L_gen` (paper: 1; 0 disables).
        bos_token_id: the start token, `vocab_size - 1` when `None`. eos_token_id, pad_token_id: `None` (images have
            neither); declared because `generate()` reads them.
    """

    model_type = "igpt"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 513,
        max_position_embeddings: int = 1024,
        hidden_size: int = 512,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 8,
        intermediate_size: int | None = None,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        objective: str = "autoregressive",
        mask_probability: float = 0.15,
        classifier_pooled_layer: int = -1,
        generative_loss_weight: float = 1.0,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.objective = objective
        self.mask_probability = mask_probability
        self.classifier_pooled_layer = classifier_pooled_layer
        self.generative_loss_weight = generative_loss_weight
        self.use_cache = use_cache
        # The start-of-sequence token is the last id; `generate()` starts from it when given no prompt.
        bos_token_id = vocab_size - 1 if bos_token_id is None else bos_token_id
        # Images have no end and no padding token: None, declared as every v5 config does (generate() reads them).
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        self.tie_word_embeddings = tie_word_embeddings
        self._check()  # before the parent's __init__, which reads properties such as head_dim
        super().__init__(tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id, **kwargs)

    @property
    def custom_pipelines(self) -> dict:
        """The saved `custom_pipelines` minus the tasks this Python already has a pipeline class of that name for.

        A published config names the pipeline's Hub code, so that `pipeline(task, model=repo, trust_remote_code=True)`
        works without this package. transformers then demands `trust_remote_code` for that task even when the same
        class is registered locally (importing `modeling_igpt` registers it); leaving such tasks to the registry lets
        `pipeline(task, model=folder)` run the installed class. The saved value itself is kept (`to_dict` reads it).
        """
        saved = self.__dict__.get("custom_pipelines") or {}
        registry = getattr(sys.modules.get("transformers.pipelines"), "PIPELINE_REGISTRY", None)
        if registry is None:
            return saved
        local = {task: registry.supported_tasks[task].get("impl") for task in saved if task in registry.supported_tasks}
        return {
            task: entry
            for task, entry in saved.items()
            if getattr(local.get(task), "__name__", None) != str(entry.get("impl", "")).rpartition(".")[2]
        }

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict):
        self.__dict__["custom_pipelines"] = value

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def start_token_id(self) -> int:
        return self.vocab_size - 1

    def _check(self):
        from transformers.activations import ACT2FN

        problems = []
        if self.vocab_size < 2:
            problems.append(f"vocab_size must be at least 2 (clusters + start token), got {self.vocab_size}")
        for name in ("max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.intermediate_size < 1:
            problems.append(f"intermediate_size must be positive, got {self.intermediate_size}")
        if not self.layer_norm_eps > 0:  # eps <= 0 divides by zero on an all-zero input: NaN outputs
            problems.append(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if self.num_attention_heads >= 1 and self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACT2FN:
            problems.append(f"unknown hidden_act {self.hidden_act!r}")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 < self.mask_probability < 1.0:
            problems.append(f"mask_probability must lie in (0, 1), got {self.mask_probability}")
        for name in ("embedding_dropout", "attention_dropout", "residual_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        depth = self.num_hidden_layers
        if not -(depth + 1) <= self.classifier_pooled_layer <= depth:
            problems.append(
                f"classifier_pooled_layer={self.classifier_pooled_layer} does not exist: "
                f"the model has hidden states 0..{depth} (or -{depth + 1}..-1)"
            )
        if self.generative_loss_weight < 0:
            problems.append(f"generative_loss_weight must be >= 0, got {self.generative_loss_weight}")
        if self.tie_word_embeddings:
            problems.append("tie_word_embeddings is not supported: the paper unties the input and output matrices")
        if problems:
            raise ValueError("Invalid IGPTConfig: " + "; ".join(problems))

    @classmethod
    def from_paper(cls, size: str, image_size: int = 32, num_clusters: int = 512, **kwargs) -> "IGPTConfig":
        """The paper's iGPT-S/M/L (`size` = "s", "m" or "l") at model resolution `image_size` (32 or 48)."""
        key = size.lower().removeprefix("igpt-")
        if key not in PAPER_SIZES:
            raise ValueError(f"Unknown paper size {size!r}: choose one of {sorted(PAPER_SIZES)}")
        preset = dict(PAPER_SIZES[key], vocab_size=num_clusters + 1, max_position_embeddings=image_size * image_size)
        return cls(**{**preset, **kwargs})


__all__ = ["IGPTConfig"]
