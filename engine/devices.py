"""Where a run trains and what it may hold there: the device, the precision, CUDA graphs, and the memory the data
may take on the host and on the device."""
import os

import torch


def resolve_device(name):
    """--device as a torch.device: "auto" is CUDA where there is one; CUDA asked for where there is none fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's message lists every device type it was built with
        raise ValueError(f"--device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
    return device


def cpu_bf16_units():
    """The CPU's native bf16 units as torch itself reports them (AMX tiles, AVX512-BF16), e.g. ["AMX", ...]."""
    probes = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    return [name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]


def resolve_precision(precision, device):
    """auto: bf16 on CUDA, and on a CPU with AMX tiles (bf16 matrix units); fp32 on other CPUs, or on any CPU when
    the environment sets GANFORGE_CPU_AUTO_PRECISION=fp32 (the test suite does: its interpreted Triton kernels are
    slow in bf16, and its results must not depend on the CPU that runs it). On AMX bf16 autocast trains the default
    MLP faster than fp32 from batch 256 up (bench/results/2026-12-02_speedrun-search-cpu/; about even at batch
    64: precision-cpu-2026-12-01/), which the default recipe's batch was chosen for; a CPU without them would
    emulate bf16, slower than fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    forced = os.environ.get("GANFORGE_CPU_AUTO_PRECISION")
    if forced is not None:
        if forced not in ("fp32", "bf16"):
            raise ValueError(f"GANFORGE_CPU_AUTO_PRECISION must be fp32 or bf16, got {forced!r}")
        return forced
    return "bf16" if "AMX" in cpu_bf16_units() else "fp32"


def resolve_graphs(graphs, device):
    """Whether the steps run as CUDA graphs (--graphs auto: on CUDA devices)."""
    if graphs == "on" and device.type != "cuda":
        raise ValueError("--graphs on needs a CUDA device (CUDA graphs capture GPU work); "
                         f"this run is on {device.type}: use --graphs off")
    return graphs == "on" or (graphs == "auto" and device.type == "cuda")


def host_memory_available():
    """Bytes of host memory available to a new allocation (Linux's MemAvailable; elsewhere all physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_budget(cfg, device):
    """Bytes resident data may take: --data-memory, else half the available host memory (and on CUDA at most half
    the device's free memory)."""
    if cfg.data_memory is not None:
        return cfg.data_memory * 2**30
    budget = 0.5 * host_memory_available()
    if device.type == "cuda":
        budget = min(budget, 0.5 * torch.cuda.mem_get_info(device)[0])
    return budget


def check_fits_on_device(dataset, device, share=0.5, rows=None):
    """The steps gather batches from a device-resident dataset (``rows`` of it: a rank's shard); refuse one that
    would crowd out the models."""
    if device.type != "cuda":
        return
    rows = len(dataset) if rows is None else rows
    needed = dataset.pixels[:1].numel() * dataset.pixels.element_size() * rows  # uint8 pixels: 1 byte each
    free, _ = torch.cuda.mem_get_info(device)
    if needed > share * free:
        raise ValueError(f"dataset {dataset.name!r} needs {needed / 2**30:.1f} GiB on the device but only "
                         f"{free / 2**30:.1f} GiB are free (at most half is used for data): use a smaller "
                         "--image-size or a subset of the data")
