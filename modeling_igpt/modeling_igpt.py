"""Image GPT (Chen et al., "Generative Pretraining from Pixels", ICML 2020) in modern transformers style.

Parameter names and layouts follow GPT-2 / transformers' ImageGPT (`transformer.wte`, `transformer.h.N.attn.c_attn`,
Conv1D weights stored [in, out], untied `lm_head` with `vocab_size - 1` outputs), so converted ImageGPT weights map
key for key. This file is shipped to the Hub next to the weights: it imports only torch, transformers and its sibling.
"""

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    ImageClassifierOutput,
    ModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.pytorch_utils import Conv1D
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_igpt import IGPTConfig
from .generation_igpt import decode_images, decoder_covers


# Keywords a forward takes besides its named arguments: transformers' attention kwargs (flash-attention's packed
# sequence lengths), which the trunk hands to the attention interface, and the loss's `num_items_in_batch` (Trainer),
# which the heads hand to the loss. Any other keyword is refused: one that fell into `**kwargs` unused would be a
# silent wrong result (`token_type_ids`, or a cache under a name the model does not read).
ATTENTION_KWARGS = frozenset(FlashAttentionKwargs.__optional_keys__)
LOSS_KWARGS = frozenset({"num_items_in_batch"})


def check_kwargs(kwargs: dict, allowed: frozenset, where: str):
    unused = sorted(key for key, value in kwargs.items() if key not in allowed and value is not None)
    if unused:
        raise ValueError(
            f"{where} got keyword argument(s) it does not use: {', '.join(unused)}. IGPT reads input_ids or "
            "inputs_embeds, attention_mask, position_ids, cache, bool_masked_pos, labels and the output flags; "
            f"the other keywords it accepts are {sorted(ATTENTION_KWARGS | LOSS_KWARGS)}."
        )


def split_loss_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """(kwargs for the trunk, kwargs for the loss)."""
    loss_kwargs = {key: kwargs[key] for key in LOSS_KWARGS if key in kwargs}
    return {key: value for key, value in kwargs.items() if key not in LOSS_KWARGS}, loss_kwargs


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


class IGPTNorm(nn.Module):
    """The paper's layer norm: x / sqrt(mean(x^2) + eps) * g — no mean-centring, no bias (fused `F.rms_norm`)."""

    def __init__(self, config: IGPTConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(config.hidden_size))
        self.eps = config.layer_norm_eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(hidden_states, self.weight.shape, self.weight, self.eps)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, T, nh, hs)
    return attn_output, attn_weights


class IGPTAttention(nn.Module):
    """Multi-head self-attention; causal for the autoregressive objective, bidirectional for BERT."""

    def __init__(self, config: IGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = config.objective == "autoregressive"
        self.attention_dropout = config.attention_dropout
        self.c_attn = Conv1D(3 * config.hidden_size, config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.c_proj.is_residual_projection = True  # init scaled by depth
        self.resid_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # (B, nh, S, hs), S = past + T

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch, length, width)  # (B, T, nh * hs)
        return self.resid_dropout(self.c_proj(attn_output)), attn_weights


class IGPTMLP(nn.Module):
    def __init__(self, config: IGPTConfig):
        super().__init__()
        self.c_fc = Conv1D(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]  # quick_gelu: x * sigmoid(1.702 x)
        self.c_proj = Conv1D(config.hidden_size, config.intermediate_size)
        self.c_proj.is_residual_projection = True  # init scaled by depth
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class IGPTBlock(GradientCheckpointingLayer):
    """GPT-2 pre-norm block: a = h + attn(norm(h)); h' = a + mlp(norm(a))."""

    def __init__(self, config: IGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = IGPTNorm(config)
        self.attn = IGPTAttention(config, layer_idx)
        self.ln_2 = IGPTNorm(config)
        self.mlp = IGPTMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attn(self.ln_1(hidden_states), attention_mask, cache, **kwargs)
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, attn_weights


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained base and the trunk
# ---------------------------------------------------------------------------------------------------------------------


class IGPTPreTrainedModel(PreTrainedModel):
    config: IGPTConfig
    config_class = IGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["IGPTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def resize_token_embeddings(self, *args, **kwargs):
        """Not supported: the ids are fixed by the tokenizer (clusters, then the start token as the last id) and the heads
        predict clusters only; transformers' resizing would move the start token and add a head class for it."""
        raise ValueError(
            "IGPT does not resize its token embeddings: ids 0..vocab_size-2 are the palette's clusters (or VQ-VAE codes) "
            "and vocab_size-1 is the start token. For another palette, build a model with vocab_size = clusters + 1."
        )

    def _init_weights(self, module: nn.Module):
        """GPT-2 init (N(0, 0.02)), residual projections scaled by 1/sqrt(2L), token and class logits zero (paper A.1)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Conv1D):
            if getattr(module, "is_residual_projection", False):
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, IGPTNorm):
            init.ones_(module.weight)
        elif any(module is getattr(self, head, None) for head in ("lm_head", "score")):
            init.zeros_(module.weight)


class IGPTModel(IGPTPreTrainedModel):
    """The trunk: token + position embeddings, L pre-norm blocks, final norm `ln_f`.

    `hidden_states[l]` (with `output_hidden_states=True`) is h^l for l < L and the final normed n^L for l = L, as in
    transformers' ImageGPT. `get_probe_features` returns the paper's probe features f^l = mean_i norm(h^l_i) (not named
    `get_image_features`: transformers 5.x gives that name another contract, pixel values in, a pooled output out).
    """

    def __init__(self, config: IGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.embedding_dropout)
        self.h = nn.ModuleList([IGPTBlock(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.ln_f = IGPTNorm(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Embedding):
        self.wte = new_embeddings

    def check_inputs(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_length: int = 0,
    ):
        """Refuse inputs the model would misread, with a ValueError that names the problem.

        Shapes and dtypes are always checked (host metadata: free). Values (token ids and positions in range) are checked
        on CPU tensors only: on an accelerator, reading them back would stall every step on a host-device
        synchronisation. There the ids are validated where they are made, on the host: the image processor and the
        collators produce them. Compiled calls skip the checks (they would break the graph); eager calls run them.
        """
        if torch.compiler.is_compiling():
            return
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.ndim != 2:
                raise ValueError(
                    f"input_ids must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}; "
                    "for one image use input_ids[None]"
                )
            if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
                raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        elif inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch_size, sequence_length, {self.config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if length == 0:
            raise ValueError("The sequence is empty: input_ids / inputs_embeds need at least one position")
        if past_length + length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence too long: {past_length + length} tokens (cached {past_length} + new {length}) but the model "
                f"has {self.config.max_position_embeddings} positions (max_position_embeddings)."
            )
        if isinstance(attention_mask, torch.Tensor):
            keys = past_length + length
            expected = f"(batch_size, cached + new tokens) = ({batch}, {keys}), or a 4-D mask ({batch}, 1, {length}, keys)"
            shape = tuple(attention_mask.shape)
            if attention_mask.ndim == 2:
                wrong = shape != (batch, keys)
            elif attention_mask.ndim == 4:
                wrong = shape[0] not in (1, batch) or shape[1] != 1 or shape[2] != length or shape[3] < keys
            else:
                wrong = True
            if wrong:
                raise ValueError(f"attention_mask has shape {shape}; expected {expected}")
        if position_ids is not None:
            if position_ids.ndim != 2 or position_ids.shape[0] not in (1, batch) or position_ids.shape[1] != length:
                raise ValueError(
                    f"position_ids has shape {tuple(position_ids.shape)}; expected ({batch}, {length}) or (1, {length})"
                )
            if position_ids.device.type == "cpu" and position_ids.numel():
                low, high = (int(value) for value in torch.aminmax(position_ids))
                if low < 0 or high >= self.config.max_position_embeddings:
                    raise ValueError(
                        f"Position {low if low < 0 else high} is out of range: the model has positions "
                        f"0..{self.config.max_position_embeddings - 1} (max_position_embeddings)"
                    )
        if input_ids is not None and input_ids.device.type == "cpu":
            low, high = (int(value) for value in torch.aminmax(input_ids))
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"Token id {low if low < 0 else high} is out of range: the vocabulary has ids "
                    f"0..{self.config.vocab_size - 1} ({self.config.vocab_size - 1} clusters + the start token "
                    f"{self.config.vocab_size - 1})."
                )

    def embed(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        past_length: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """h^0 = token embedding (zeroed at BERT-masked positions) + position embedding. Returns (B, T, d).

        Callers run `check_inputs` first."""
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)  # (B, T, d)
        if bool_masked_pos is not None:
            if bool_masked_pos.shape != inputs_embeds.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos has shape {tuple(bool_masked_pos.shape)}, expected {tuple(inputs_embeds.shape[:2])}"
                )
            if bool_masked_pos.dtype != torch.bool:
                raise ValueError(
                    f"bool_masked_pos must be a bool tensor (True = masked), got dtype {bool_masked_pos.dtype}; "
                    "convert a 0/1 mask with mask.bool()"
                )
            inputs_embeds = inputs_embeds * (~bool_masked_pos).unsqueeze(-1).to(inputs_embeds.dtype)
        if position_ids is None:
            position_ids = (past_length + torch.arange(length, device=inputs_embeds.device)).unsqueeze(0)  # (1, T)
        return self.drop(inputs_embeds + self.wpe(position_ids))

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            BERT mask M: the token embeddings of these positions are zeroed.
        kwargs: transformers' attention kwargs only (`ATTENTION_KWARGS`); any other keyword is a ValueError.
            `past_key_values` is the deprecated name of `cache`.
        """
        check_kwargs(kwargs, ATTENTION_KWARGS, f"{type(self).__name__}.forward")
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        causal = self.config.objective == "autoregressive"
        use_cache = causal and (self.config.use_cache if use_cache is None else use_cache)
        if use_cache and cache is None and not (self.gradient_checkpointing and self.training):
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        self.check_inputs(input_ids, inputs_embeds, attention_mask, position_ids, past_length)

        hidden_states = self.embed(input_ids, inputs_embeds, position_ids, bool_masked_pos, past_length)  # (B, T, d)
        attention_mask = self.attention_mask_for(hidden_states, attention_mask, cache, position_ids, past_length)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer, (hidden_states, attn_weights) in enumerate(
            self.run_layers(hidden_states, attention_mask, cache, **kwargs)
        ):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions and layer > 0:
                all_attentions += (attn_weights,)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    def attention_mask_for(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        past_length: int | torch.Tensor = 0,
    ) -> torch.Tensor | None:
        """The mask the blocks get: causal (AR) unless one new token sees every cached key; padding only (BERT)."""
        if self.config.objective == "bert":  # a 2-D mask added to (B, nh, T, S) scores as-is would broadcast wrongly
            return create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )
        if self.sees_every_cached_key(cache, attention_mask, past_length, hidden_states.shape[1]):
            return attention_mask
        return create_causal_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )

    def run_layers(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        depth: int | None = None,
        **kwargs,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The trunk's loop over its blocks, one hidden state at a time.

        Yields (h^l, attention weights of block l - 1) for l = 0..depth (all L blocks by default): h^l is block l's input
        (B, T, d) and the last one, at l = L, is n^L = ln_f(h^L), as in `hidden_states`. The blocks past `depth` never
        run, so a probe of a middle layer pays only for the layers below it.
        """
        depth = self.config.num_hidden_layers if depth is None else depth
        attn_weights = None  # no block has run yet
        for block in self.h if depth == self.config.num_hidden_layers else self.h[:depth]:
            yield hidden_states, attn_weights
            hidden_states, attn_weights = block(hidden_states, attention_mask, cache, **kwargs)
        if depth == self.config.num_hidden_layers:
            hidden_states = self.ln_f(hidden_states)  # n^L
        yield hidden_states, attn_weights

    @staticmethod
    def sees_every_cached_key(cache: Cache | None, attention_mask, past_length, query_length: int) -> bool:
        """Whether one new token, without padding, attends to every key the cache hands back: then no mask is needed
        (nor built when compiled). True when the cache returns exactly the positions written so far (`get_mask_sizes`
        says past + 1 keys), as a `DynamicCache` does and a preallocated `StaticCache` does not."""
        if cache is None or attention_mask is not None or query_length != 1 or isinstance(past_length, torch.Tensor):
            return False
        key_length, key_offset = cache.get_mask_sizes(query_length, 0)
        return key_length == past_length + 1 and key_offset == 0

    def layer_index(self, layer: int) -> int:
        """Hidden state `layer` (0..L, or -(L+1)..-1 from the end) as an index 0..L; any other is a ValueError."""
        depth = self.config.num_hidden_layers
        if not -(depth + 1) <= layer <= depth:
            raise ValueError(f"Layer {layer} does not exist: the model has hidden states 0..{depth} (or -{depth + 1}..-1)")
        return layer % (depth + 1)

    def normed_hidden_state(self, hidden_state: torch.Tensor, layer: int) -> torch.Tensor:
        """n^l: h^l through the norm that reads it — block l's `ln_1`, or `ln_f` (already applied) for l = L."""
        layer = self.layer_index(layer)
        return hidden_state if layer == self.config.num_hidden_layers else self.h[layer].ln_1(hidden_state)

    def get_probe_features(
        self,
        input_ids: torch.LongTensor,
        layers: int | list[int] = -1,
        concat: bool = True,
        bool_masked_pos: torch.BoolTensor | None = None,
    ) -> torch.Tensor:
        """Probe features f^l = mean_i n^l_i (paper Section 2.4) for one layer or several.

        Runs the trunk only as deep as the deepest requested layer. Returns (B, d) for one layer, (B, k*d) for k layers
        with `concat=True`, else (B, k, d).
        """
        wanted = [self.layer_index(layer) for layer in ([layers] if isinstance(layers, int) else layers)]
        if not wanted:
            raise ValueError("layers must name at least one hidden state")
        self.check_inputs(input_ids)
        hidden_states = self.embed(input_ids, bool_masked_pos=bool_masked_pos)  # h^0: (B, T, d)
        attention_mask = self.attention_mask_for(hidden_states)
        features = {}
        for layer, (hidden_states, _) in enumerate(self.run_layers(hidden_states, attention_mask, depth=max(wanted))):
            if layer in wanted:
                features[layer] = self.normed_hidden_state(hidden_states, layer).mean(dim=1)  # f^l: (B, d)
        stacked = torch.stack([features[layer] for layer in wanted], dim=1)  # (B, k, d)
        if isinstance(layers, int):
            return stacked[:, 0]
        return stacked.flatten(1) if concat else stacked


# ---------------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------------


def random_bert_mask(
    shape: tuple[int, int], probability: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.BoolTensor:
    """The BERT mask M: each position independently with `probability` (paper Section 2.1)."""
    return torch.rand(shape, device=device, generator=generator) < probability


def model_inputs(pixel_ids: torch.LongTensor, objective: str, start_token_id: int) -> torch.LongTensor:
    """An image's pixel ids -> what the trunk reads: AR models [start, x_1 .. x_{N-1}] (as in pretraining), BERT models
    the pixels as they are."""
    if objective == "bert":
        return pixel_ids
    start = torch.full_like(pixel_ids[:, :1], start_token_id)
    return torch.cat([start, pixel_ids[:, :-1]], dim=1)  # (B, N)


def _check_pixel_labels(labels: torch.Tensor, num_classes: int):
    """Labels in range; on CPU tensors only (reading values back from an accelerator would synchronise every step)."""
    if torch.compiler.is_compiling() or labels.device.type != "cpu":
        return
    valid = labels[labels != -100]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
        raise ValueError(
            f"Label {bad} is out of range: the output head predicts clusters 0..{num_classes - 1} "
            "(use -100 to ignore a position; the start token is never a target)."
        )


class IGPTForCausalImageModeling(IGPTPreTrainedModel, GenerationMixin):
    """Autoregressive next-pixel prediction (L_AR) with an untied head over the `vocab_size - 1` clusters.

    `labels` follow the transformers convention (shifted inside). To predict every pixel of an image with
    `max_position_embeddings` positions, feed `input_ids = [start, x_1 .. x_{N-1}]` and pass
    `labels = [-100, x_1 .. x_N]`, one longer than `input_ids`: the label after the last input is used too.
    """

    def __init__(self, config: IGPTConfig):
        if config.objective != "autoregressive":
            raise ValueError("IGPTForCausalImageModeling needs objective='autoregressive'; use IGPTForMaskedImageModeling")
        super().__init__(config)
        self.transformer = IGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size - 1, bias=False)
        self.loss_type = "ForCausalLM"
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        kwargs: `num_items_in_batch` for the loss and transformers' attention kwargs; any other keyword is a
            ValueError. `past_key_values` is the deprecated name of `cache`.
        """
        kwargs, loss_kwargs = split_loss_kwargs(kwargs)
        outputs = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)  # (B, T, vocab - 1)

        loss = None
        if labels is not None:
            loss = self.autoregressive_loss(logits, labels, **loss_kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate` with two defaults for images, both overridden by what the caller passes:

        - length: with neither `max_length` nor `max_new_tokens` set, a whole image — the start token plus
          `max_position_embeddings` pixels (`generate()` with no prompt starts from the start token).
        - loop: on the CPU, a request that IGPT's image decoder serves exactly (greedy or sampling without padding,
          stopping at the length; `generation_igpt.decoder_covers`) runs it as `custom_generate`; every other request,
          or `cache_implementation="dynamic"`, goes through transformers' loop.
        """
        lengths = [kwargs.get("max_length"), kwargs.get("max_new_tokens")]
        for config in (generation_config, self.generation_config):
            if config is not None:
                lengths += [config.max_length, config.max_new_tokens]
        if all(length is None for length in lengths):
            kwargs["max_length"] = self.config.max_position_embeddings + 1
        if kwargs.get("custom_generate") is None and decoder_covers(self, inputs, generation_config, kwargs):
            # generate() hands a callable `custom_generate` no streamer (it keeps those of its own loops): bind it here
            kwargs["custom_generate"] = functools.partial(decode_images, streamer=kwargs.get("streamer"))
        return super().generate(inputs, generation_config, **kwargs)

    def autoregressive_loss(self, logits: torch.Tensor, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        """Next-token cross entropy; `labels` of length T (shifted inside) or T + 1 (the token after the last too)."""
        length = logits.shape[1]
        if labels.ndim != 2 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"labels must have shape (batch_size, sequence_length) = ({logits.shape[0]}, {length}) or one longer, "
                f"got {tuple(labels.shape)}"
            )
        if labels.shape[1] not in (length, length + 1):
            raise ValueError(f"labels have length {labels.shape[1]}; expected {length} or {length + 1} for {length} inputs")
        shift_labels = F.pad(labels, (0, length + 1 - labels.shape[1]), value=-100)[:, 1:]  # (B, T): target of t
        _check_pixel_labels(shift_labels, self.config.vocab_size - 1)
        kwargs.pop("shift_labels", None)
        return self.loss_function(
            logits, None, vocab_size=self.config.vocab_size - 1, shift_labels=shift_labels.contiguous(), **kwargs
        )


@dataclass
class IGPTMaskedImageModelingOutput(ModelOutput):
    """BERT outputs: the loss over masked positions, per-position logits and the mask M that was used."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class IGPTForMaskedImageModeling(IGPTPreTrainedModel):
    """BERT objective (L_BERT): predict the pixels at masked positions from the unmasked ones, no attention mask."""

    def __init__(self, config: IGPTConfig):
        if config.objective != "bert":
            raise ValueError("IGPTForMaskedImageModeling needs objective='bert'; use IGPTForCausalImageModeling")
        super().__init__(config)
        self.transformer = IGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size - 1, bias=False)
        self.loss_type = "ForMaskedLM"
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> IGPTMaskedImageModelingOutput:
        r"""
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The BERT mask M, a bool tensor (an integer one is refused). Drawn with `config.mask_probability` when not
            given (in training and evaluation alike, as in the paper). A mask of no positions gives a loss of 0.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The pixel tokens; the loss counts masked positions only. With `num_items_in_batch` (Trainer) they must
            already be -100 outside `bool_masked_pos`, so that the count is of masked pixels.
        """
        reference = input_ids if input_ids is not None else inputs_embeds
        if bool_masked_pos is None:
            bool_masked_pos = random_bert_mask(reference.shape[:2], self.config.mask_probability, reference.device)
        trunk_kwargs, _ = split_loss_kwargs(kwargs)
        outputs = self.transformer(input_ids, inputs_embeds=inputs_embeds, bool_masked_pos=bool_masked_pos, **trunk_kwargs)
        logits = self.lm_head(outputs.last_hidden_state)  # (B, T, vocab - 1)

        loss = None
        if labels is not None:
            if labels.shape != bool_masked_pos.shape:
                raise ValueError(
                    f"labels must have shape (batch_size, sequence_length) = {tuple(bool_masked_pos.shape)}, "
                    f"got {tuple(labels.shape)}"
                )
            unmasked = ~bool_masked_pos.bool()
            checkable = labels.device.type == "cpu" and not torch.compiler.is_compiling()  # no sync on a GPU
            if kwargs.get("num_items_in_batch") is not None and checkable:
                # Trainer counted labels != -100 as items: labels at unmasked positions would scale the loss down
                if (labels[unmasked] != -100).any():
                    raise ValueError(
                        "labels must be -100 outside bool_masked_pos when num_items_in_batch is given (Trainer counts "
                        "every label != -100 as an item, but only masked pixels are scored): draw the mask where the "
                        "batch is made, as modeling_igpt.PretrainingCollator does."
                    )
            masked_labels = labels.masked_fill(unmasked, -100)
            _check_pixel_labels(masked_labels, self.config.vocab_size - 1)
            if kwargs.get("num_items_in_batch") is None:  # mean over masked pixels; a mask of none gives 0, not 0/0
                kwargs = {**kwargs, "num_items_in_batch": (masked_labels != -100).sum().clamp_min(1)}
            loss = self.loss_function(logits, masked_labels, vocab_size=self.config.vocab_size - 1, **kwargs)
        return IGPTMaskedImageModelingOutput(
            loss=loss,
            logits=logits,
            bool_masked_pos=bool_masked_pos,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class IGPTForImageClassification(IGPTPreTrainedModel):
    """Fine-tuning (paper Section 2.3): a zero-initialised linear head on f^l, loss L_clf + w * L_gen.

    `input_ids` are whole images' pixel ids, exactly as the image processor makes them (so transformers'
    image-classification pipeline, Trainer and the examples all feed the same thing); the model builds the trunk's
    inputs itself (`model_inputs`: the start token and the shift for AR models). L_gen is the checkpoint's own
    objective (every pixel predicted from the ones before it, or BERT on a random mask) with the untied `lm_head` the
    pretrained checkpoint brings. BERT models see masked inputs at evaluation too; use `predict_with_mask_ensemble`
    for the paper's 5-mask modal prediction.
    """

    accepts_loss_kwargs = True

    def __init__(self, config: IGPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = IGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size - 1, bias=False)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.loss_type = "ForImageClassification"
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, max_position_embeddings)`):
            The pixel ids of whole images (height x width = `config.max_position_embeddings`), as the image processor
            makes them, without a start token: the model adds it.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices.
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            BERT models only: the mask M (drawn with `config.mask_probability` when not given).
        inputs_embeds (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            Instead of `input_ids`: the trunk's input embeddings, already in its order (`model_inputs`). With
            `labels`, needs `config.generative_loss_weight=0` (L_gen's targets are ids).
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("Specify exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            self.check_pixel_ids(input_ids)
        if labels is not None:
            self.check_labels(labels, reference.shape[0])
            if input_ids is None and self.config.generative_loss_weight > 0:
                raise ValueError(
                    "labels with inputs_embeds: the generative loss L_gen needs input_ids as its targets; pass "
                    "input_ids, or set config.generative_loss_weight=0 to train on the classification loss alone"
                )
        bert = self.config.objective == "bert"
        if bert and bool_masked_pos is None:
            bool_masked_pos = random_bert_mask(reference.shape[:2], self.config.mask_probability, reference.device)
        layer = self.transformer.layer_index(self.config.classifier_pooled_layer)
        pool_last = layer == self.config.num_hidden_layers
        trunk_ids = None if input_ids is None else model_inputs(input_ids, self.config.objective, self.config.start_token_id)
        outputs = self.transformer(
            trunk_ids,
            inputs_embeds=inputs_embeds,
            bool_masked_pos=bool_masked_pos if bert else None,
            output_hidden_states=output_hidden_states or not pool_last,
            output_attentions=output_attentions,
            use_cache=False,
            **kwargs,
        )
        hidden = outputs.last_hidden_state if pool_last else outputs.hidden_states[layer]
        features = self.transformer.normed_hidden_state(hidden, layer).mean(dim=1)  # f^l: (B, d)
        logits = self.score(features)  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, num_items_in_batch=num_items_in_batch)
            if self.config.generative_loss_weight > 0:
                gen_loss = self.generative_loss(outputs.last_hidden_state, input_ids, bool_masked_pos)
                if num_items_in_batch is not None:  # Trainer normalises by examples across accumulation steps
                    gen_loss = gen_loss * input_ids.shape[0] / num_items_in_batch
                loss = loss + self.config.generative_loss_weight * gen_loss
        return ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )

    def check_pixel_ids(self, pixel_ids: torch.Tensor):
        """Whole images' pixel ids, without the start token (values checked on CPU tensors only).

        A processor of another image size than the model's (e.g. 4x4 images for an 8x8 model) would otherwise be
        classified silently, on a part of the positions the head was trained on.
        """
        if torch.compiler.is_compiling() or pixel_ids.ndim != 2:
            return  # the trunk names a wrong rank
        positions = self.config.max_position_embeddings
        if pixel_ids.shape[1] != positions:
            raise ValueError(
                f"IGPTForImageClassification reads whole images: got {pixel_ids.shape[1]} pixel ids per image but the "
                f"model has {positions} positions (height x width of its images). The image processor's size must "
                "match the model's (modeling_igpt.check_model_fits_tokenizer checks a model/processor pair)."
            )
        if pixel_ids.device.type == "cpu" and pixel_ids.numel() and bool((pixel_ids == self.config.start_token_id).any()):
            raise ValueError(
                f"input_ids hold the start token ({self.config.start_token_id}): the classifier reads the image's "
                "pixel ids as the image processor makes them and adds the start token itself (model_inputs() output "
                "is for IGPTModel, not the classifier)."
            )

    def check_labels(self, labels: torch.Tensor, batch: int):
        """Class indices of shape (B,) in 0..num_labels-1 (or -100, ignored); values checked on CPU tensors only."""
        if torch.compiler.is_compiling():
            return
        single_label = self.num_labels > 1 and not labels.is_floating_point() and labels.dtype != torch.bool
        if single_label and tuple(labels.shape) != (batch,):
            raise ValueError(f"labels must be class indices of shape (batch_size,) = ({batch},), got {tuple(labels.shape)}")
        if single_label and labels.device.type == "cpu":
            valid = labels[labels != -100]
            if valid.numel():
                low, high = (int(value) for value in torch.aminmax(valid))
                if low < 0 or high >= self.num_labels:
                    raise ValueError(
                        f"Label {low if low < 0 else high} is out of range: the classifier has classes "
                        f"0..{self.num_labels - 1} (config.num_labels={self.num_labels}; -100 ignores an example)"
                    )

    def generative_loss(
        self, last_hidden_state: torch.Tensor, input_ids: torch.LongTensor, bool_masked_pos: torch.BoolTensor | None
    ) -> torch.Tensor:
        """L_gen on the image: every pixel from the ones before it (AR: position t reads [start, x_1..x_t-1] and predicts
        x_t) or the masked pixels (BERT); cross entropy, mean per target token."""
        logits = self.lm_head(last_hidden_state).float()  # (B, N, vocab - 1)
        targets = input_ids  # (B, N): the pixel ids
        if self.config.objective == "bert":
            targets = targets.masked_fill(~bool_masked_pos, -100)
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum")
        return total / (targets != -100).sum().clamp_min(1)  # mean per target token; 0, not 0/0, when there is none

    @torch.no_grad()
    def predict_with_mask_ensemble(
        self, input_ids: torch.LongTensor, num_masks: int = 5, generator: torch.Generator | None = None
    ) -> torch.LongTensor:
        """BERT evaluation (paper Section 4.4): classify under `num_masks` random masks, return the modal class (B,)."""
        if self.config.objective != "bert":
            return self(input_ids).logits.argmax(-1)
        votes = torch.stack(
            [
                self(
                    input_ids,
                    bool_masked_pos=random_bert_mask(
                        input_ids.shape, self.config.mask_probability, input_ids.device, generator
                    ),
                ).logits.argmax(-1)
                for _ in range(num_masks)
            ]
        )  # (num_masks, B)
        return torch.mode(votes, dim=0).values


__all__ = [
    "IGPTPreTrainedModel",
    "IGPTModel",
    "IGPTForCausalImageModeling",
    "IGPTForMaskedImageModeling",
    "IGPTForImageClassification",
    "IGPTMaskedImageModelingOutput",
    "model_inputs",
    "random_bert_mask",
]
