"""Peak memory of a whole command and every process it starts (a streamed run's data workers count too).

    ganforge bench peak-memory --out peak.json -- ganforge train --dataset npy --data-path big.npy ...

Samples the resident set size (VmRSS) of the command's process tree every --interval seconds from /proc (Linux)
and writes the peak of their sum, the peak of the main process alone and the wall time. RSS counts the memory a
process holds (its heap, its tensors, file pages it maps); the kernel's page cache of files read with read/pread is
not in it.
"""
import argparse
import json
import os
import subprocess
import time


def _children(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")  # a child may be started by any thread of the process
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def _rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid):
    """(sum of VmRSS over pid and its descendants, pid's own VmRSS, number of processes)."""
    total, seen, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_bytes(p)
        seen += 1
        todo.extend(_children(p))
    return total, _rss_bytes(pid), seen


def measure(command, interval=0.2):
    began = time.perf_counter()
    process = subprocess.Popen(command)
    peak_tree = peak_main = most_processes = 0
    while process.poll() is None:
        total, main, count = tree_rss(process.pid)
        peak_tree, peak_main = max(peak_tree, total), max(peak_main, main)
        most_processes = max(most_processes, count)
        time.sleep(interval)
    return {"command": command, "returncode": process.returncode, "wall_seconds": round(time.perf_counter() - began, 2),
            "peak_tree_rss_bytes": peak_tree, "peak_main_rss_bytes": peak_main, "most_processes": most_processes,
            "sample_interval_seconds": interval}


def add_arguments(parser):
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")


def run(args):
    """Prints the result as JSON and writes it to --out when given; exits with the command's exit code."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ValueError("give the command to measure after --")
    if not os.path.isdir("/proc/self/task"):
        raise ValueError("peak-memory reads process memory from /proc: Linux only")
    result = measure(command, args.interval)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result["returncode"]
