"""What R3GAN's penalties cost: ms per D step of RpGAN + R1 + R2 (gamma on every D step), through the explicit
input gradient and through autograd's double backward, beside the same D step without a penalty.

    ganforge bench penalty-cost [--model dcgan-28] [--batch-size 64] [--device cpu|cuda] [--iters 10]
                                [--repeats 5] [--out FILE.json]

Three sessions of one model and batch run the engine's own steps as `ganforge train` resolves them on the device
(precision, CUDA graphs and kernels "auto"), timed interleaved (train_bench.measure_interleaved): a block of
iterations of each in turn, then single iterations with the D and G steps timed apart. The figure is each
penalised D step's time over the unpenalised one's, the number R3GAN's users quote as "6~7x slower" with both
penalties by double backward (brownvc/R3GAN, issue 9). The data are synthetic images of the model's shape.
"""

from ..engine.config import TrainConfig
from ..engine.provenance import provenance
from ..engine.session import build_session
from .results import device_name
from .timing import quantiles
from .train_bench import BENCH_WIDTH, MODELS, Plan, bench_dataset, measure_interleaved, release

SCHEMA = "ganforge-penalty-cost/1"
# column -> the objective's penalty and how its input gradient is computed. "no penalty" keeps the penalised
# columns' critic (without a penalty the engine gives DCGAN's D BatchNorm): its penalty interval lies beyond the
# run, so only the first D step (index 0, in the warm-up) is penalised.
NEVER = 10**9
COLUMNS = {
    "no penalty": {"penalty": "r1+r2", "penalty_every": NEVER},
    "double backward": {"penalty": "r1+r2", "penalty_grad": "autograd"},
    "explicit": {"penalty": "r1+r2", "penalty_grad": "explicit"},
}


def column_config(model_name, column, batch_size, device):
    model, _ = MODELS[model_name]
    fields = {"penalty_every": 1, **COLUMNS[column]}
    return TrainConfig(model=model, width=BENCH_WIDTH, batch_size=batch_size, device=str(device), loss="rpgan", progress=False,
                       fid_samples=0, **fields)


def measure(model_name="dcgan-28", batch_size=64, device="cpu", iters=10, repeats=5, warmup=3):
    """The results dict: one row per column, each with its ms per D step and the ratio to "no penalty"."""
    plan = Plan((model_name,), ("rpgan-r1r2",), (batch_size,), tuple(COLUMNS), warmup, iters, repeats)
    dataset = bench_dataset(MODELS[model_name][1], batch_size)
    sessions = [build_session(column_config(model_name, column, batch_size, device), dataset=dataset)
                for column in COLUMNS]
    timed, _ = measure_interleaved(sessions, plan)
    rows = []
    for column, session, t in zip(COLUMNS, sessions, timed):
        d_ms = quantiles(t.d_ms)
        penalized = session.cfg.penalty_every < NEVER
        rows.append({"column": column, "penalty": session.cfg.penalty if penalized else "none",
                     "penalty_grad": session.state.penalty_grad if penalized else None,
                     "precision": session.precision, "graphs": session.graphs,
                     "ms_per_d_step": d_ms.median, "ms_per_d_step_p20": d_ms.p20, "ms_per_d_step_p80": d_ms.p80,
                     "d_step_samples": d_ms.count, "ms_per_g_step": quantiles(t.g_ms).median,
                     "ms_per_iter": quantiles(t.block_ms).median / iters})
    sessions = timed = None
    release("steps")
    base = rows[0]["ms_per_d_step"]
    for row in rows:
        row["d_step_vs_no_penalty"] = row["ms_per_d_step"] / base
    return {"schema": SCHEMA, "device": device_name(device), **provenance(), "model": model_name,
            "batch_size": batch_size, "loss": "rpgan", "penalty_weight": 1.0, "penalty_every": 1,
            "iters": iters, "repeats": repeats, "warmup": warmup, "rows": rows,
            "reference": "R3GAN's users report 6-7x slower training with R1 + R2 by double backward "
                         "(github.com/brownvc/R3GAN issue 9)"}


def markdown_table(results):
    lines = [f"{results['model']}, batch {results['batch_size']}, RpGAN + R1 + R2 on every D step, "
             f"{results['device']}:", "",
             "| D step | input gradient | ms per D step (p20-p80) | vs no penalty |", "|---|---|---:|---:|"]
    for row in results["rows"]:
        lines.append(f"| {row['column']} | {row['penalty_grad'] or '-'} | {row['ms_per_d_step']:.2f} "
                     f"({row['ms_per_d_step_p20']:.2f}-{row['ms_per_d_step_p80']:.2f}) | "
                     f"{row['d_step_vs_no_penalty']:.2f}x |")
    return "\n".join(lines) + "\n"


def add_arguments(parser):
    parser.add_argument("--model", choices=tuple(MODELS), default="dcgan-28")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10, help="iterations per timed block (and single-step samples)")


def run(args):
    """Defaults: --device cpu, --repeats 5 timed blocks per column, --out runs/bench/penalty-cost.json."""
    from .harness import finish

    if args.batch_size < 1 or args.iters < 1:
        raise ValueError("--batch-size and --iters must be >= 1")
    results = measure(args.model, args.batch_size, args.device or "cpu", args.iters, args.repeats or 5)
    finish(args, results, "runs/bench/penalty-cost.json", markdown_table)
    return 0
