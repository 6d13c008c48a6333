"""Where a decode step's time goes, for the next GPU session: graph replay per bucket, an eager step's kernels
(torch.profiler), the step under each SDPA backend and under eager attention; with --train, the compiled training step
at S under each SDPA backend (per block and whole-model compile). Not a benchmark against ImageGPT (bench_model.py is).

    python benchmarks/profile_decode.py [--device cuda] [--layers 24 --width 512 --heads 8 --batch 64] [--train]

`--device cpu` rehearses it at a tiny size (no graphs there).
"""

import argparse
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import bench_model
from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling
from modeling_igpt import generation_igpt


def timed_ms(fn, repeats: int, device: str) -> float:
    fn()
    bench_model.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    bench_model.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1e3


def build(args, layers: int, width: int, heads: int, positions: int) -> IGPTForCausalImageModeling:
    config = IGPTConfig(vocab_size=513, max_position_embeddings=positions, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=heads)  # fmt: skip
    with torch.device(args.device):
        return IGPTForCausalImageModeling(config)


def decode(args):
    model = build(args, args.layers, args.width, args.heads, args.positions).eval()
    start = torch.full((args.batch, 1), 512, device=args.device)
    for label in ("first (captures graphs on CUDA)", "second"):
        bench_model.synchronize(args.device)
        begin = time.perf_counter()
        model.generate(start, do_sample=False)
        bench_model.synchronize(args.device)
        print(f"generate, {label}: {time.perf_counter() - begin:.2f} s", flush=True)
    decoder = generation_igpt._graph_decoders.get(model)
    if decoder is None:  # the CPU decoder has no graphs: time one eager step of the CUDA decoder's code instead
        decoder = generation_igpt.graph_decoder(model, args.batch, args.positions + 1)
        decoder.prefill(model, start)
    for view, (graph, _) in sorted(decoder.graphs.items())[:: max(1, len(decoder.graphs) // 4)]:
        print(f"graph replay, view {view}: {timed_ms(graph.replay, 50, args.device):.3f} ms", flush=True)
    position = args.positions // 2
    decoder.position.fill_(position)
    decoder.cache.length = position
    view = min(-(-(position + 1) // generation_igpt.GRAPH_BUCKET) * generation_igpt.GRAPH_BUCKET, args.positions + 1)

    def step():
        decoder.forward(model, decoder.tokens, decoder.position[0], view)

    with torch.no_grad():
        for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.FLASH_ATTENTION):
            try:
                with sdpa_kernel(backend):
                    print(f"eager step at {position}, SDPA {backend.name}: {timed_ms(step, 20, args.device):.3f} ms")
            except RuntimeError as error:
                print(f"eager step, SDPA {backend.name}: {str(error).splitlines()[0][:150]}")
        with generation_igpt.eager_attention(model):
            print(f"eager step at {position}, eager attention: {timed_ms(step, 20, args.device):.3f} ms", flush=True)
        activity = torch.profiler.ProfilerActivity.CUDA if args.device == "cuda" else torch.profiler.ProfilerActivity.CPU
        for label, attention in (("SDPA", None), ("eager attention", generation_igpt.eager_attention)):
            with (attention(model) if attention else torch.autograd.profiler.record_function(label)):
                step()
                with torch.profiler.profile(activities=[activity]) as profile:
                    for _ in range(5):
                        step()
                    bench_model.synchronize(args.device)
            sort = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
            print(f"\n5 eager steps, {label}:\n" + profile.key_averages().table(sort_by=sort, row_limit=12), flush=True)


def training_backends(args):
    """Tokens/s of the compiled training step at S (bf16 autocast, fused AdamW) under each SDPA backend."""
    shape = bench_model.GPU_SHAPES["S"] if args.device == "cuda" else bench_model.CPU_SHAPE
    model = build(args, shape.layers, shape.width, shape.heads, shape.seq).train()
    tokens = bench_model.pixel_tokens(shape, shape.batch, args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forwards = {"blocks compiled": bench_model.CompiledBlocks(model), "whole model compiled": torch.compile(model, fullgraph=True)}
    for name, forward in forwards.items():
        step = bench_model.TrainingStep(model, tokens, args.device, forward=forward, optimizer=optimizer)
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel(backend):
                    ms = timed_ms(step, 6, args.device)
                print(f"training {shape.name}, {name}, {backend.name}: {ms:.1f} ms/step, "
                      f"{tokens.numel() / ms * 1e3:,.0f} tokens/s", flush=True)  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a backend this device lacks
                print(f"training {shape.name}, {name}, {backend.name}: {type(error).__name__}: "
                      f"{str(error).splitlines()[0][:150]}")  # fmt: skip
            if name == "whole model compiled":
                break  # one more compile per backend would cost minutes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--layers", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--train", action="store_true", help="also time training under each SDPA backend")
    args = parser.parse_args()
    size = (24, 512, 8, 64, 1024) if args.device == "cuda" else (2, 64, 2, 4, 128)
    args.layers, args.width, args.heads, args.batch = (
        given or default for given, default in zip((args.layers, args.width, args.heads, args.batch), size)
    )
    args.positions = size[4]
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 decoding, as the benchmark samples
    decode(args)
    generation_igpt._graph_decoders.clear()
    if args.train:
        training_backends(args)


if __name__ == "__main__":
    main()
