"""Image decoding on the CPU: a KV cache read only up to its filled length, and a compiled one-token step.

`generate(cache_implementation="static")` asks transformers for a preallocated cache and a compiled decode step. On an
accelerator IGPT takes transformers' own path for it (a `StaticCache` of fixed shape, so CUDA graphs can replay the
step). On the CPU there are no graphs to replay, and two costs of that path remain: every step attends over all
`max_length` cache slots under a mask (twice the keys and values an image needs on average, and reading them is what
a late decode step spends most of its time on), and `generate()`'s loop adds its own per-step work around the model.
`decode_images` replaces both: `IGPTPrefixCache` hands attention exactly the filled positions (no mask), the step is
compiled once with a dynamic sequence length, and the loop does only what an image needs — choose the next pixel of
every image, write it down, feed it back. Requests it does not cover (other devices, padding, stopping criteria other
than the length, beams, dict outputs, a cache passed in) go through transformers' loop unchanged.
"""

import contextlib

import torch
from transformers.cache_utils import Cache, StaticLayer
from transformers.generation import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria


class IGPTPrefixLayer(StaticLayer):
    """One layer's keys and values, preallocated as (B, nh, max_cache_len, hs); its cache says where to write them.

    `update` replaces StaticLayer's (which writes at `cache_position` and hands attention every slot); the position
    bookkeeping that StaticLayer's other methods do is the cache's (`IGPTPrefixCache.length`).
    """

    is_compileable = False  # not for transformers' fixed-shape compiled decoding; `decode_images` compiles it its own way

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, start: int, *args, **kwargs):
        """Store (B, nh, T, hs) at positions start..start+T-1; return the filled (B, nh, start + T, hs)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = start + key_states.shape[-2]
        if end > self.max_cache_len:
            raise ValueError(f"The cache holds {self.max_cache_len} positions; {end} were written")
        self.keys[:, :, start:end] = key_states
        self.values[:, :, start:end] = value_states
        return self.keys[:, :, :end], self.values[:, :, :end]


class IGPTPrefixCache(Cache):
    """A preallocated KV cache whose attention reads only the positions written so far.

    Every layer holds the same positions, so the cache keeps one length, a Python int: a step compiled with dynamic
    shapes takes it as one symbolic size, serves every position with one graph, and hands back one new length.
    """

    def __init__(self, config, max_cache_len: int):
        super().__init__(layers=[IGPTPrefixLayer(max_cache_len) for _ in range(config.num_hidden_layers)])
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.layers[layer_idx].update(key_states, value_states, self.length)
        if layer_idx == len(self.layers) - 1:  # the last layer has written: the new positions are cached
            self.length += key_states.shape[-2]
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.length + query_length, 0  # asked before `update`: the keys that the queries will see

    def crop(self, tokens_to_remove: int):
        if tokens_to_remove > 0:  # transformers' convention: a negative count of positions to drop
            raise ValueError(f"crop takes a negative number of positions to remove, got {tokens_to_remove}")
        self.length = max(0, self.length + tokens_to_remove)

    def reset(self):
        super().reset()
        self.length = 0


def decode_step(model, tokens: torch.LongTensor, cache: IGPTPrefixCache) -> torch.Tensor:
    """Feed one token per image, (B, 1), after the cached ones; return the next-pixel logits (B, vocab - 1)."""
    return model(tokens, cache=cache, use_cache=True).logits[:, -1]


# Compiled once per model structure, with dynamic shapes: the cache length changes every step, the graph does not.
# A C++ wrapper around the generated kernels: at decode size Python's part of each call is a good share of its time.
compiled_decode_step = torch.compile(decode_step, fullgraph=True, dynamic=True, options={"cpp_wrapper": True})

_KNOWN_MODEL_KWARGS = {"cache", "attention_mask", "position_ids", "use_cache", "logits_to_keep"}


def can_decode_images(
    model,
    input_ids: torch.LongTensor,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool,
    model_kwargs: dict,
) -> bool:
    """Whether `decode_images` gives exactly what transformers' sampling loop would for this `generate()` request."""
    position_ids = model_kwargs.get("position_ids")
    return (
        model.device.type == "cpu"
        and generation_config.cache_implementation == "static"
        and not generation_config.return_dict_in_generate
        and not synced_gpus
        and all(type(criterion) is MaxLengthCriteria for criterion in stopping_criteria)  # no EOS, time or custom stop
        and model_kwargs.get("attention_mask") is None  # no padding
        and not getattr(model_kwargs.get("cache"), "_is_user_defined", False)
        and all(value is None for key, value in model_kwargs.items() if key not in _KNOWN_MODEL_KWARGS)
        and (position_ids is None or bool((position_ids == torch.arange(input_ids.shape[1])).all()))
    )


def decode_images(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    generation_config: GenerationConfig,
    streamer=None,
) -> torch.LongTensor:
    """Continue every sequence of `input_ids` (B, T0) to `generation_config.max_length` tokens; returns (B, max_length).

    Greedy or multinomial, through `logits_processor`, as transformers' `_sample` chooses tokens. The prompt is one
    eager forward; each later token one call of the compiled step (eager with `disable_compile=True`).
    `generation_config.compile_config` configures transformers' fixed-shape path and is not used here.
    """
    batch, prompt_length = input_ids.shape
    max_length = generation_config.max_length
    positions = model.config.max_position_embeddings
    if max_length - 1 > positions:  # the last token is never fed back
        raise ValueError(
            f"Sequence too long: max_length={max_length} needs {max_length - 1} positions but the model has {positions} "
            "(max_position_embeddings); the start token plus a whole image is max_position_embeddings + 1 tokens."
        )
    sequences = input_ids.new_empty((batch, max_length))
    sequences[:, :prompt_length] = input_ids
    # The last token is never fed back, so max_length - 1 slots would do; one more keeps every slice a strict prefix
    # of the buffer (a slice equal to the whole buffer would be a new case for the compiled step: one more compile).
    cache = IGPTPrefixCache(model.config, max_cache_len=max_length)
    logits = model(input_ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, vocab - 1)

    step = decode_step if generation_config.disable_compile else compiled_decode_step
    compiled_calls = 0
    with contextlib.ExitStack() as guards:
        for position in range(prompt_length, max_length):
            scores = logits_processor(sequences[:, :position], logits.float())
            if generation_config.do_sample:
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            sequences[:, position] = next_tokens
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if position + 1 == max_length:
                break
            if cache.get_seq_length() < 2:  # lengths 0 and 1 would get a graph of their own: run them eagerly
                logits = decode_step(model, next_tokens[:, None], cache)
                continue
            logits = step(model, next_tokens[:, None], cache)
            compiled_calls += 1
            if compiled_calls == 2 and step is compiled_decode_step:
                # Two calls checked the guards (model, dtypes, a dynamic length); the rest of this loop passes the same
                # model, the same cache and one more position each time, so checking them again would only cost time.
                guards.enter_context(torch.compiler.set_stance(skip_guard_eval_unsafe=True))
    if streamer is not None:
        streamer.end()
    return sequences
