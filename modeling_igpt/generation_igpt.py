"""Image decoding: a preallocated KV cache, no per-step work beyond the model, `generate()`'s default for images.

An image's length is known before it is drawn, so two costs of transformers' loop can go: a cache that grows by
concatenation (or, with `cache_implementation="static"`, attention over every preallocated slot under a mask), and
`generate()`'s own per-step work. `decode_images` replaces both, one way per device:

- CPU: `IGPTPrefixCache` hands attention exactly the filled positions (so one new token needs no mask), and the step
  is compiled once per model with a dynamic sequence length.
- CUDA: `CUDAGraphImageDecoder` writes keys and values at a position held in a device tensor (`IGPTGraphCache`), so a
  captured CUDA graph of the whole step serves every position; attention reads the cache up to the next multiple of
  `GRAPH_BUCKET` positions under a mask, one graph per bucket, captured on first use and kept for the next call.

The loop does only what an image needs — choose the next pixel of every image, write it down, feed it back. It plugs
into `generate()` through the public `custom_generate` hook; `IGPTForCausalImageModeling.generate` picks it by default
for the requests it serves exactly (`decoder_covers`): greedy or sampling from a prompt without padding, stopping at
the length. Every other request (padding, EOS or custom stopping, beams, dict outputs, a cache passed in, other devices)
goes through transformers' loop unchanged.
"""

import contextlib
import copy
import math
import weakref

import torch
from transformers.cache_utils import Cache, StaticLayer
from transformers.generation import GenerationConfig, GenerationMode, LogitsProcessorList, StoppingCriteriaList
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
    return model(tokens, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


# Compiling the step takes tens of seconds on a small CPU and pays that back only over a long decode: shorter requests
# run the same decoder eagerly (still without a mask and without `generate()`'s per-step bookkeeping).
MIN_NEW_TOKENS_TO_COMPILE = 256
_compiled_steps = weakref.WeakKeyDictionary()  # model -> its compiled step, made on first use


def compiled_decode_step(model):
    """`decode_step` compiled for `model` on first use, with dynamic shapes: the cache length changes every step, the
    graph does not. A C++ wrapper around the generated kernels: at decode size Python's part of a call counts."""
    if model not in _compiled_steps:
        _compiled_steps[model] = torch.compile(decode_step, fullgraph=True, dynamic=True, options={"cpp_wrapper": True})
    return _compiled_steps[model]


# --- CUDA: one captured graph per bucket of cache lengths -------------------------------------------------------------

GRAPH_BUCKET = 64  # attention reads the cache up to the next multiple of this: one graph per 64 positions


class IGPTGraphLayer(StaticLayer):
    """One layer's keys and values, preallocated as (B, nh, max_cache_len, hs); its cache says where to write them."""

    is_compileable = False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, positions: torch.Tensor, view_length: int):
        """Store (B, nh, T, hs) at the T slots `positions` (a device tensor); return the first `view_length` slots."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys.index_copy_(2, positions, key_states)
        self.values.index_copy_(2, positions, value_states)
        return self.keys[:, :, :view_length], self.values[:, :, :view_length]


class IGPTGraphCache(Cache):
    """A preallocated KV cache for CUDA graphs: where to write is a device tensor (`positions`), so one captured step
    serves every position; attention reads `view_length` slots, and the caller's mask hides those not yet written.

    `length` (a Python int) is the number of positions written before the current call, for the model's input checks.
    """

    def __init__(self, config, max_cache_len: int):
        super().__init__(layers=[IGPTGraphLayer(max_cache_len) for _ in range(config.num_hidden_layers)])
        self.max_cache_len = max_cache_len
        self.length = 0
        self.positions = None  # (T,) slots the current call writes
        self.view_length = max_cache_len

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.layers[layer_idx].update(key_states, value_states, self.positions, self.view_length)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.view_length, 0


class CUDAGraphImageDecoder:
    """Decoding for one model, batch and length on CUDA: the cache, the step's static inputs (the fed tokens and their
    position) and one CUDA graph per bucket of `view_length`, captured on first use.

    A graph reads the model's weights where they were when it was captured: `matches` tells whether it still serves a
    request (same batch, length, dtype and parameter storage); a model in training mode runs the same step eagerly.
    """

    def __init__(self, model, batch: int, max_length: int):
        self.batch, self.max_length = batch, max_length  # no reference to the model: it keys the decoder weakly
        self.dtype = model.dtype
        self.storage = parameter_storage(model)
        self.cache = IGPTGraphCache(model.config, max_cache_len=max_length)
        self.tokens = torch.zeros((batch, 1), dtype=torch.long, device=model.device)  # (B, 1): the fed tokens
        self.position = torch.zeros((1, 1), dtype=torch.long, device=model.device)  # their position
        self.slots = torch.arange(max_length, device=model.device)
        self.graphs = {}  # view_length -> (graph, its logits)

    def matches(self, model, batch: int, max_length: int) -> bool:
        same_request = (batch, max_length, model.dtype) == (self.batch, self.max_length, self.dtype)
        return same_request and parameter_storage(model) == self.storage

    def attention_mask(self, query_positions: torch.Tensor, view_length: int) -> torch.Tensor:
        """(1, 1, T, view_length) additive mask: query at position p sees slots 0..p (for eager and SDPA alike)."""
        visible = self.slots[:view_length] <= query_positions.view(-1, 1)  # (T, view_length)
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=visible.device)
        return mask.masked_fill_(~visible, torch.finfo(self.dtype).min)[None, None]

    def forward(self, model, tokens: torch.Tensor, positions: torch.Tensor, view_length: int) -> torch.Tensor:
        """Feed `tokens` (B, T) at `positions` (T,); return the next-pixel logits after the last (B, vocab - 1)."""
        self.cache.positions, self.cache.view_length = positions, view_length
        mask = self.attention_mask(positions, view_length)
        output = model(
            tokens, cache=self.cache, attention_mask=mask, position_ids=positions[None], use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        return output.logits[:, -1]

    def prefill(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        """The prompt (B, T0), eagerly, into slots 0..T0-1."""
        length = input_ids.shape[1]
        self.cache.length = 0
        logits = self.forward(model, input_ids, self.slots[:length], view_length=length)
        self.cache.length = length
        return logits

    def step(self, model, next_tokens: torch.Tensor, position: int, use_graphs: bool = True) -> torch.Tensor:
        """Feed one token per image (B,) at `position`; return the next-pixel logits (B, vocab - 1)."""
        view_length = min(math.ceil((position + 1) / GRAPH_BUCKET) * GRAPH_BUCKET, self.max_length)
        self.tokens.copy_(next_tokens[:, None])
        self.position.fill_(position)
        self.cache.length = position
        if not use_graphs:
            logits = self.forward(model, self.tokens, self.position[0], view_length)
        else:
            if view_length not in self.graphs:
                self.graphs[view_length] = self.capture(model, view_length)
            graph, logits = self.graphs[view_length]
            graph.replay()
        self.cache.length = position + 1
        return logits

    def capture(self, model, view_length: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Run the step once on a side stream (it writes the same keys and values the replay will), then capture it."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.forward(model, self.tokens, self.position[0], view_length)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self.forward(model, self.tokens, self.position[0], view_length)
        return graph, logits


def parameter_storage(model) -> tuple:
    """Where every parameter and buffer lives: a captured graph reads these addresses."""
    return tuple(tensor.data_ptr() for tensor in (*model.parameters(), *model.buffers()))


_graph_decoders = weakref.WeakKeyDictionary()  # model -> its last CUDAGraphImageDecoder (cache and graphs)


def graph_decoder(model, batch: int, max_length: int) -> CUDAGraphImageDecoder:
    """The model's decoder for this request: the last one if it matches, else a new one (the old one freed first)."""
    decoder = _graph_decoders.get(model)
    if decoder is None or not decoder.matches(model, batch, max_length):
        _graph_decoders.pop(model, None)
        del decoder
        _graph_decoders[model] = CUDAGraphImageDecoder(model, batch, max_length)
    return _graph_decoders[model]


_GENERATE_ARGUMENTS = {  # generate()'s own keywords: neither generation-config fields nor model inputs
    "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus", "assistant_model", "streamer",
    "negative_prompt_ids", "negative_prompt_attention_mask", "custom_generate", "trust_remote_code", "tokenizer",
    "assistant_tokenizer",
}  # fmt: skip


def decoder_covers(model, inputs, generation_config: GenerationConfig | None, kwargs: dict) -> bool:
    """Whether `model.generate(inputs, generation_config, **kwargs)` is a request `decode_images` serves exactly as
    transformers' greedy or sampling loop would, on a device where the decoder is the faster of the two.

    Devices: the CPU, and CUDA with eager or SDPA attention (the graphs' mask is an additive 4-D one).
    Covered: `input_ids` without padding, greedy or multinomial with any logits processors (top-k, top-p, temperature,
    ...), a streamer, stopping at the length. Everything else goes through transformers' loop: other devices, beams and
    assisted decoding, dict outputs, EOS, time or custom stopping criteria, padding, a cache passed in, `inputs_embeds`,
    `use_cache=False`, a cache implementation other than the default or "static", guidance, chunked prefill.
    """
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    generate_arguments = {key: value for key, value in kwargs.items() if key in _GENERATE_ARGUMENTS}
    model_inputs = config.update(**{key: value for key, value in kwargs.items() if key not in _GENERATE_ARGUMENTS})
    attention_mask = model_inputs.pop("attention_mask", None)
    position_ids = model_inputs.pop("position_ids", None)
    input_ids = inputs if inputs is not None else model_inputs.pop("input_ids", None)
    generate_arguments.pop("logits_processor", None), generate_arguments.pop("streamer", None)  # both served
    stopping_criteria, synced_gpus = generate_arguments.pop("stopping_criteria", None), generate_arguments.pop(
        "synced_gpus", None
    )
    return (
        (
            model.device.type == "cpu"
            or (model.device.type == "cuda" and model.config._attn_implementation in ("sdpa", "eager"))
        )
        and not stopping_criteria
        and not synced_gpus
        and all(value is None for value in generate_arguments.values())
        and config.get_generation_mode() in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
        and not config.return_dict_in_generate
        and config.use_cache is not False
        and config.cache_implementation in (None, "static")
        and config.eos_token_id is None
        and config.max_time is None
        and config.stop_strings is None
        and config.guidance_scale in (None, 1)
        and config.prefill_chunk_size is None
        and all(value is None for value in model_inputs.values())  # no cache, inputs_embeds or other model inputs
        and (input_ids is None or (isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2))  # None: start token
        and (attention_mask is None or bool(attention_mask.all()))  # no padding
        and default_positions(position_ids, position_ids.shape[-1] if position_ids is not None else 0)
    )


def default_positions(position_ids: torch.LongTensor | None, length: int) -> bool:
    """Whether `position_ids` are absent or 0..length-1 for every row (what the decoder assumes)."""
    return position_ids is None or bool((position_ids.cpu() == torch.arange(length)).all())


def cpu_steps(model, input_ids: torch.LongTensor, max_length: int, compile_step: bool):
    """The CPU decoder as a coroutine: yields the logits after the prompt, then, for each token sent (B,), the logits
    after it. The step reads an `IGPTPrefixCache` up to its filled length, compiled with a dynamic length if asked."""
    # The last token is never fed back, so max_length - 1 slots would do; one more keeps every slice a strict prefix
    # of the buffer (a slice equal to the whole buffer would be a new case for the compiled step: one more compile).
    cache = IGPTPrefixCache(model.config, max_cache_len=max_length)
    next_tokens = yield model(input_ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    step = compiled_decode_step(model) if compile_step else decode_step
    compiled_calls = 0
    with contextlib.ExitStack() as guards:
        while True:
            if cache.get_seq_length() < 2:  # lengths 0 and 1 would get a graph of their own: run them eagerly
                next_tokens = yield decode_step(model, next_tokens[:, None], cache)
                continue
            logits = step(model, next_tokens[:, None], cache)
            compiled_calls += compile_step
            if compiled_calls == 2:
                # Two calls checked the guards (model, dtypes, a dynamic length); the rest of this loop passes the same
                # model, the same cache and one more position each time, so checking them again would only cost time.
                guards.enter_context(torch.compiler.set_stance(skip_guard_eval_unsafe=True))
            next_tokens = yield logits


def cuda_steps(model, input_ids: torch.LongTensor, max_length: int, use_graphs: bool):
    """The CUDA decoder as a coroutine (as `cpu_steps`): the prompt eagerly, then one graph replay per token, the steps
    under the model's eager attention (`eager_attention`)."""
    decoder = graph_decoder(model, input_ids.shape[0], max_length)
    position = input_ids.shape[1]
    next_tokens = yield decoder.prefill(model, input_ids)
    with eager_attention(model):
        while True:
            next_tokens = yield decoder.step(model, next_tokens, position, use_graphs)
            position += 1


@contextlib.contextmanager
def eager_attention(model):
    """Run one-token steps with the model's eager attention (a (B, nh, 1, hs) x (B, nh, hs, S) product, softmax, a
    second product), then switch back. SDPA's fused kernels work on tiles of 32-64 queries, so a single query per image
    wastes most of their work, and with fp32 weights there are no tensor cores to hide it: with SDPA an H200 took 7 ms
    a step for 64 images of a 24-layer d=512 model (docs/performance.md; the eager steps are still to be measured).
    Graphs captured here keep the eager kernels."""
    implementation = model.config._attn_implementation
    if implementation == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(implementation)


def decode_images(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    streamer=None,
    **model_kwargs,
) -> torch.LongTensor:
    """Continue every sequence of `input_ids` (B, T0) to `generation_config.max_length` tokens; returns (B, max_length).

    A `generate(custom_generate=...)` loop: transformers prepares the request and calls it as it would call `_sample`
    (generate() hands a callable no streamer, so bind one with `functools.partial(decode_images, streamer=...)`).
    Greedy or multinomial, through `logits_processor`, as transformers' loop chooses tokens. The prompt is one eager
    forward. Each later token is one call of the step: on the CPU compiled for requests of `MIN_NEW_TOKENS_TO_COMPILE`
    new tokens or more, on CUDA a CUDA-graph replay (eager while the model is in training mode); `disable_compile=True`
    runs the step eagerly on both. A request it does not serve exactly (see `decoder_covers`) is a ValueError.
    """
    check_request(input_ids, stopping_criteria, generation_config, model_kwargs)
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
    new_tokens = max_length - prompt_length
    if input_ids.device.type == "cuda":
        use_graphs = not (generation_config.disable_compile or model.training)
        steps = cuda_steps(model, input_ids, max_length, use_graphs)
    else:
        compile_step = not generation_config.disable_compile and new_tokens >= MIN_NEW_TOKENS_TO_COMPILE
        steps = cpu_steps(model, input_ids, max_length, compile_step)
    try:
        logits = next(steps)  # after the prompt: (B, vocab - 1)
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
            logits = steps.send(next_tokens)
    finally:
        steps.close()  # leaves the CPU step's guard stance, whatever happened in this loop
    if streamer is not None:
        streamer.end()
    return sequences


def check_request(
    input_ids: torch.LongTensor,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    model_kwargs: dict,
):
    """Refuse, by name, what `generate()` prepared that `decode_images` would not serve as transformers' loop does."""
    problems = []
    if generation_config.get_generation_mode() not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        problems.append(f"generation mode {generation_config.get_generation_mode().value} (greedy or sampling only)")
    if generation_config.return_dict_in_generate:
        problems.append("return_dict_in_generate=True")
    stops = [type(criterion).__name__ for criterion in stopping_criteria if type(criterion) is not MaxLengthCriteria]
    problems += [f"stopping criterion {name}" for name in stops]
    if model_kwargs.get("attention_mask") is not None:
        problems.append("an attention mask with padding")
    cache = model_kwargs.get("cache")
    if cache is not None and cache.get_seq_length() > 0:
        problems.append("a cache that already holds positions")
    position_ids = model_kwargs.get("position_ids")
    if not default_positions(position_ids, input_ids.shape[1]):
        problems.append("position_ids other than 0..T-1")
    problems += [f"model input {key}" for key, value in model_kwargs.items() if key not in SERVED and value is not None]
    if problems:
        raise ValueError(f"decode_images does not serve {', '.join(problems)}; call generate() without custom_generate")


# What generate() hands its loop that the decoder reads or replaces: its cache, the prompt's positions, logits_to_keep
SERVED = {"cache", "attention_mask", "position_ids", "use_cache", "logits_to_keep"}
