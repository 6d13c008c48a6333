"""Model speed: IGPT vs transformers' ImageGPT, same shape, same weights, alternating in one run.

Three jobs, each timed for every model in turn, round after round, so that both see the same machine load:

- training step: forward, next-pixel loss, backward, AdamW step (fused); tokens/s and peak memory;
- feature extraction: no-grad trunk, the paper's probe feature f^L = mean_i n^L_i; tokens/s;
- sampling: greedy `generate()` from the start token, default settings on both sides; new tokens/s, and whether the
  samples are token-identical.

On a GPU the forward runs under bf16 autocast (sampling stays fp32 so greedy samples can be compared token for token),
IGPT is timed eager and compiled (every block through `torch.compile(block, fullgraph=True)`, `CompiledBlocks`),
and MFU is model FLOPs (6N + 12 L T d per trained token, a third of that per extracted token) over the 8192^3 bf16
matmul rate measured in the same run.

    python benchmarks/bench_model.py [--device cpu|cuda] [--quick] [--shapes S,M,L] [--jobs training,sampling]
        [--json out.json]
"""

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import CompileConfig, ImageGPTConfig, ImageGPTForCausalImageModeling
from transformers.utils import logging as transformers_logging

from modeling_igpt import IGPTForCausalImageModeling
from modeling_igpt.convert_imagegpt import copy_weights, imagegpt_to_igpt_config


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    width: int
    heads: int
    batch: int  # training and feature-extraction batch
    sample_batch: int | None  # images sampled at once; None: no sampling at this shape
    seq: int = 1024  # 32 x 32 pixels
    clusters: int = 512


CPU_SHAPE = Shape("L4/d128", layers=4, width=128, heads=4, batch=4, sample_batch=4)
GPU_SHAPES = {
    "S": Shape("S 24L/512d", layers=24, width=512, heads=8, batch=32, sample_batch=64),
    "M": Shape("M 36L/1024d", layers=36, width=1024, heads=8, batch=16, sample_batch=None),
    "L": Shape("L 48L/1536d", layers=48, width=1536, heads=16, batch=8, sample_batch=None),
}


@dataclass(frozen=True)
class Plan:
    """How long to time each job.

    Training and features: `rounds` alternations of `calls` timed calls per model, after 2 warm-up calls. Sampling:
    `sample_rounds` alternations of one `generate()` of `sample_tokens` new tokens per model.
    """

    rounds: int
    train_calls: int
    feature_calls: int
    sample_tokens: int
    sample_rounds: int
    cpu_memory: bool  # peak memory on CPU: one fresh process per model (slow)
    transformers_loop: bool = True  # also sample with IGPT through transformers' loop (as long as ImageGPT's calls)


FULL = Plan(rounds=3, train_calls=3, feature_calls=3, sample_tokens=1024, sample_rounds=5, cpu_memory=True)
QUICK = Plan(rounds=2, train_calls=2, feature_calls=2, sample_tokens=128, sample_rounds=1, cpu_memory=False)
GPU = Plan(  # a lent GPU's minutes are few
    rounds=2, train_calls=3, feature_calls=3, sample_tokens=1024, sample_rounds=2, cpu_memory=False,
    transformers_loop=False,
)


# --- Models and inputs ------------------------------------------------------------------------------------------------


def build_pair(shape: Shape, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """transformers' ImageGPT (its own init, seed 0) and IGPT holding the same weights, on `device`."""
    config = ImageGPTConfig(
        vocab_size=shape.clusters + 1, n_positions=shape.seq, n_embd=shape.width, n_layer=shape.layers,
        n_head=shape.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    with torch.device(device):
        reference = ImageGPTForCausalImageModeling(config)
        ours = IGPTForCausalImageModeling(imagegpt_to_igpt_config(config))  # SDPA attention by default
    reference.to(device)  # ImageGPT's layer norms make their weight with torch.Tensor(), which ignores torch.device
    copy_weights(reference, ours)
    return reference, ours


def pixel_tokens(shape: Shape, batch: int, device: str) -> torch.Tensor:
    """[start, x_1 .. x_{N-1}]: (batch, seq) random cluster ids behind the start token."""
    pixels = torch.randint(0, shape.clusters, (batch, shape.seq - 1), generator=torch.Generator().manual_seed(0))
    return torch.cat([torch.full((batch, 1), shape.clusters), pixels], dim=1).to(device)


def model_flops_per_token(shape: Shape, model: torch.nn.Module) -> float:
    """Training FLOPs per token, 6N + 12 L T d (N: parameters outside the embedding lookups)."""
    lookups = sum(p.numel() for name, p in model.named_parameters() if name.endswith(("wte.weight", "wpe.weight")))
    matmul_params = sum(p.numel() for p in model.parameters()) - lookups
    return 6 * matmul_params + 12 * shape.layers * shape.seq * shape.width


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


class CompiledBlocks:
    """Call `model` with every block through `torch.compile(block, fullgraph=True)`: the blocks share one graph (same
    code, same shapes), so compiling takes one block's time whatever the depth; embeddings, final norm, head and loss
    stay eager. The eager blocks are put back after each call, so `model` itself stays eager for the other jobs."""

    def __init__(self, model):
        self.model, self.trunk = model, model.transformer
        self.eager_blocks = self.trunk.h
        self.compiled_blocks = torch.nn.ModuleList(torch.compile(block, fullgraph=True) for block in self.eager_blocks)

    @contextlib.contextmanager
    def blocks_compiled(self):
        self.trunk.h = self.compiled_blocks
        try:
            yield
        finally:
            self.trunk.h = self.eager_blocks

    def __call__(self, *args, **kwargs):
        with self.blocks_compiled():
            return self.model(*args, **kwargs)

    def probe_features(self, input_ids):
        with self.blocks_compiled():
            return self.trunk.get_probe_features(input_ids)


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


# --- Jobs -------------------------------------------------------------------------------------------------------------


class TrainingStep:
    """Forward, next-pixel loss, backward and a fused AdamW step on fixed `tokens` (bf16 autocast on CUDA)."""

    def __init__(self, model, tokens: torch.Tensor, device: str, forward=None, optimizer=None):
        self.model, self.tokens, self.device = model, tokens, device
        self.forward = model if forward is None else forward  # a compiled forward shares weights and optimizer
        if optimizer is None:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.optimizer = optimizer

    def __call__(self):
        with autocast(self.device):
            loss = self.forward(self.tokens, labels=self.tokens, use_cache=False).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def held_bytes(self) -> int:
        """What the model keeps between steps: parameters and optimizer state (gradients are set to None)."""
        state = [t for values in self.optimizer.state.values() for t in values.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *state])


def alternate(jobs: dict, tokens_per_call: int, rounds: int, calls: int, device: str) -> dict:
    """Time every job `calls` times per round, jobs in turn, for `rounds` rounds; median tokens/s per job.

    On CUDA, training jobs also get their peak memory less what the other models hold between steps: the peak the job
    would reach alone on the card.
    """
    for job in jobs.values():  # warm-up: compilation, autotuning, allocator growth
        job(), job()
    rates = {name: [] for name in jobs}
    peaks = dict.fromkeys(jobs, 0)
    for _ in range(rounds):
        for name, job in jobs.items():
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                job()
            synchronize(device)
            rates[name].append(tokens_per_call * calls / (time.perf_counter() - start))
            if device == "cuda" and isinstance(job, TrainingStep):
                others = {id(o.model): o.held_bytes() for o in jobs.values() if o.model is not job.model}
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() - sum(others.values()))
    results = summarize_rounds(rates)
    for name, peak in peaks.items():
        if peak:
            results[name]["peak_memory_gib"] = peak / 2**30
    return results


def bench_training(shape: Shape, reference, ours, device: str, plan: Plan, compile_ours: bool) -> dict:
    tokens = pixel_tokens(shape, shape.batch, device)
    reference.train(), ours.train()
    jobs = {"imagegpt": TrainingStep(reference, tokens, device), "igpt": TrainingStep(ours, tokens, device)}
    if compile_ours:
        compiled = CompiledBlocks(ours)
        jobs["igpt_compiled"] = TrainingStep(ours, tokens, device, forward=compiled, optimizer=jobs["igpt"].optimizer)
    results = alternate(jobs, tokens.numel(), plan.rounds, plan.train_calls, device)
    if device == "cpu" and plan.cpu_memory:
        for name in ("imagegpt", "igpt"):
            results[name]["peak_memory_gib"] = cpu_training_peak_gib(name, shape)
    return results


def bench_features(shape: Shape, reference, ours, device: str, plan: Plan, compile_ours: bool) -> dict:
    """No-grad probe features f^L (B, d); ImageGPT's: its last hidden state (already through ln_f) averaged."""
    tokens = pixel_tokens(shape, shape.batch, device)
    reference.eval(), ours.eval()

    def job(features):
        @torch.no_grad()
        def extract():
            with autocast(device):
                features(tokens)

        return extract

    jobs = {
        "imagegpt": job(lambda ids: reference.transformer(ids, use_cache=False).last_hidden_state.mean(dim=1)),
        "igpt": job(ours.transformer.get_probe_features),
    }
    if compile_ours:
        jobs["igpt_compiled"] = job(CompiledBlocks(ours).probe_features)
    return alternate(jobs, tokens.numel(), plan.rounds, plan.feature_calls, device)


def summarize_rounds(rates: dict[str, list[float]]) -> dict:
    """Median tokens/s per model, every round's rate, and every round's ratio to ImageGPT's rate in the same round."""
    results = {name: {"tokens_per_s": statistics.median(r), "rounds_tokens_per_s": r} for name, r in rates.items()}
    for name in rates.keys() - {"imagegpt"}:
        results[name]["rounds_vs_imagegpt"] = [ours / theirs for ours, theirs in zip(rates[name], rates["imagegpt"])]
    return results


def bench_sampling(shape: Shape, reference, ours, device: str, plan: Plan) -> dict:
    """Greedy samples of `sample_batch` images, `plan.sample_tokens` tokens each, from the start token, in fp32.

    ImageGPT and IGPT are both called with `generate()`'s default settings (only the length and greedy are given),
    which for IGPT is its image decoder (`generation_igpt.decode_images`): on the CPU a cache read up to its filled
    length and one compiled step for every position, on CUDA one captured CUDA graph per 64 positions. A third job runs
    IGPT through transformers' own loop (`cache_implementation="dynamic"`), the path ImageGPT takes (not in the GPU
    plan: as long as ImageGPT's calls). IGPT's first call
    compiles (CPU) or captures its graphs (CUDA): it is the warm-up and is reported apart. Rounds alternate the jobs;
    each round's ratio to ImageGPT is kept, the median is reported.
    """
    copy_weights(reference, ours)  # training steps moved the two models apart
    reference.eval(), ours.eval()
    start = torch.full((shape.sample_batch, 1), shape.clusters, device=device)
    length = 1 + plan.sample_tokens
    samples = {}

    def job(name, model, **options):
        def sample():
            samples[name] = model.generate(start, max_length=length, do_sample=False, **options)

        return sample

    jobs = {"imagegpt": job("imagegpt", reference), "igpt": job("igpt", ours)}
    if plan.transformers_loop:
        jobs["igpt_transformers_loop"] = job("igpt_transformers_loop", ours, cache_implementation="dynamic")
    synchronize(device)
    begin = time.perf_counter()  # warm-up at the measured length: the first call compiles or captures
    jobs["igpt"]()
    synchronize(device)
    first_call_s = time.perf_counter() - begin
    rates = {name: [] for name in jobs}
    for _ in range(plan.sample_rounds):
        for name, sample in jobs.items():
            synchronize(device)
            begin = time.perf_counter()
            sample()
            synchronize(device)
            rates[name].append(shape.sample_batch * plan.sample_tokens / (time.perf_counter() - begin))
    results = summarize_rounds(rates)
    results["igpt"]["first_call_s"] = first_call_s
    for name in jobs.keys() - {"imagegpt"}:
        same_images = (samples[name] == samples["imagegpt"]).all(dim=1)
        results[name]["token_identical_images"] = f"{int(same_images.sum())}/{shape.sample_batch}"
    return results


# --- Memory on CPU and peak FLOP rate ---------------------------------------------------------------------------------


def max_rss_bytes() -> int:
    """This process's peak resident memory. Linux: VmHWM, since ru_maxrss keeps the parent's peak across exec."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS


def cpu_training_peak_gib(name: str, shape: Shape) -> float:
    """Peak resident memory a training step adds to a fresh process (model, AdamW state, activations)."""
    command = [sys.executable, __file__, "--peak-memory-of", name, "--shape-json", json.dumps(asdict(shape))]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def report_peak_memory(name: str, shape: Shape):
    baseline = max_rss_bytes()
    reference, ours = build_pair(shape, "cpu")
    model = {"imagegpt": reference, "igpt": ours}[name]
    step = TrainingStep(model, pixel_tokens(shape, shape.batch, "cpu"), "cpu")
    step(), step()
    print((max_rss_bytes() - baseline) / 2**30)


def matmul_flops_per_s(device: str) -> float:
    """Dense matmul rate: 8192^3 bf16 on CUDA, 2048^3 fp32 on CPU; best of 5."""
    size, dtype = (8192, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# --- One shape, the table ---------------------------------------------------------------------------------------------


def timed(label: str, bench, shape: Shape, *args) -> dict:
    start = time.perf_counter()
    result = bench(shape, *args)
    print(f"[{shape.name}] {label} measured in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return result


JOBS = ("training", "features", "sampling")


def bench_shape(
    shape: Shape, device: str, plan: Plan, peak_flops: float, compile_ours: bool, jobs: tuple[str, ...] = JOBS
) -> dict:
    """The `jobs` at one shape. A job that fails is recorded under its name as {"error": ...} and the next one runs
    (on a lent GPU, one failure must not cost the other measurements)."""
    reference, ours = build_pair(shape, device)
    flops = model_flops_per_token(shape, ours)
    result = {"shape": asdict(shape), "model_flops_per_token": flops}
    benches = {
        "training": (bench_training, (compile_ours,), flops),
        "features": (bench_features, (compile_ours,), flops / 3),
        "sampling": (bench_sampling, (), None),
    }
    for job in jobs:
        bench, extra, flops_per_token = benches[job]
        if job == "sampling" and not shape.sample_batch:
            continue
        try:
            result[job] = timed(job, bench, shape, reference, ours, device, plan, *extra)
        except Exception as error:  # noqa: BLE001 - recorded and printed; the other jobs still run
            result[job] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:500]}
            print(f"[{shape.name}] {job} failed: {result[job]['error']}", file=sys.stderr, flush=True)
            traceback.print_exc()
            continue
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        if flops_per_token:
            for timing in result[job].values():
                timing["mfu"] = timing["tokens_per_s"] * flops_per_token / peak_flops
    return result


def print_shape(result: dict, device_name: str):
    shape = result["shape"]
    sampled = f", sampling {shape['sample_batch']} images" if shape["sample_batch"] else ""
    print(f"\n{device_name}: {shape['name']}, seq {shape['seq']}, batch {shape['batch']}{sampled}")
    print(f"{'':28}{'tokens/s':>12}{'vs ImageGPT':>13}{'MFU':>7}{'peak GiB':>10}{'vs ImageGPT':>13}")
    for job in ("training", "features", "sampling"):
        if job not in result:
            continue
        timings = result[job]
        if "error" in timings:
            print(f"{job}: failed: {timings['error']}")
            continue
        baseline = timings["imagegpt"]
        for name in ("imagegpt", "igpt", "igpt_compiled", "igpt_transformers_loop"):
            if name not in timings:
                continue
            timing = timings[name]
            speedup = timing["tokens_per_s"] / baseline["tokens_per_s"]
            row = f"{job + ' ' + name:28}{timing['tokens_per_s']:12.0f}{speedup:12.2f}x"
            row += f"{timing['mfu']:7.2f}" if "mfu" in timing else " " * 7
            if timing.get("peak_memory_gib") and baseline.get("peak_memory_gib"):
                memory_ratio = timing["peak_memory_gib"] / baseline["peak_memory_gib"]
                row += f"{timing['peak_memory_gib']:10.2f}{memory_ratio:12.2f}x"
            if len(timing.get("rounds_vs_imagegpt", [])) > 1:
                row += "  rounds " + " / ".join(f"{ratio:.2f}x" for ratio in timing["rounds_vs_imagegpt"])
            if "token_identical_images" in timing:
                row += f"  greedy samples token-identical to ImageGPT: {timing['token_identical_images']}"
            print(row)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


def run(
    quick: bool = False,
    device: str = "cpu",
    shapes: list[str] | None = None,
    json_path: str | None = None,
    compile_on_cpu: bool = False,
    jobs: tuple[str, ...] = JOBS,
) -> dict:
    """Benchmark `device` ("cpu": L4/d128; "cuda": the paper's S/M/L, or `shapes`); returns the results dict.

    Training and features are timed compiled as well on CUDA, or on CPU with `compile_on_cpu`. Results are written to
    `json_path` (if given) after every shape, so an interrupted run keeps what it measured. `jobs`: any of training,
    features, sampling. On CUDA the full plan is `GPU` (fewer rounds: a lent GPU's minutes are few).
    """
    transformers_logging.set_verbosity_error()
    plan = QUICK if quick else GPU if device == "cuda" else FULL
    selected = [CPU_SHAPE] if device == "cpu" else [GPU_SHAPES[key] for key in (shapes or list(GPU_SHAPES))]
    compile_ours = device == "cuda" or compile_on_cpu
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 sampling stays exact enough to compare greedy tokens
    peak_flops = matmul_flops_per_s(device)
    results = {
        "device": device_name(device),
        "torch": torch.__version__,
        "plan": asdict(plan),
        "matmul_flops_per_s": peak_flops,
        "shapes": [],
    }
    for shape in selected:
        try:
            results["shapes"].append(bench_shape(shape, device, plan, peak_flops, compile_ours, tuple(jobs)))
        except torch.OutOfMemoryError as error:
            results["shapes"].append({"shape": asdict(shape), "error": f"out of memory: {error}".splitlines()[0]})
            torch.cuda.empty_cache()
            print(f"\n{results['device']}: {shape.name}: out of memory")
        if json_path:
            Path(json_path).write_text(json.dumps(results, indent=2))
        if "error" not in results["shapes"][-1]:
            print_shape(results["shapes"][-1], results["device"])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 128 sampled tokens instead of 1,024")
    parser.add_argument("--shapes", default="S,M,L", help="GPU shapes to run, comma-separated")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--compile", action="store_true", help="on CPU, also time compiled training and features")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated: training, features, sampling")
    parser.add_argument("--peak-memory-of", choices=["imagegpt", "igpt"], help=argparse.SUPPRESS)
    parser.add_argument("--shape-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory_of:  # child process of cpu_training_peak_gib
        report_peak_memory(args.peak_memory_of, Shape(**json.loads(args.shape_json)))
        return
    run(args.quick, args.device, args.shapes.split(","), args.json, args.compile, args.jobs.split(","))


if __name__ == "__main__":
    main()
