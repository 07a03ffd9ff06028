"""The `ganforge` command: one dispatcher above the engine and the bench suite.

It imports each subcommand's module only when that subcommand runs, so the engine never imports bench/ and
`ganforge --help` does not pay for torch.
"""
import importlib
import os
import sys

from .engine.signals import Terminated, terminate_raises

# subcommand -> (module, function taking argv and returning an exit code)
COMMANDS = {
    "train": ("ganforge.commands.training", "train_command"),
    "sample": ("ganforge.commands.training", "sample_command"),
    "fid": ("ganforge.commands.training", "fid_command"),
    "score": ("ganforge.commands.training", "score_command"),
    "interpolate": ("ganforge.commands.training", "interpolate_command"),
    "augment": ("ganforge.commands.training", "augment_command"),
    "train-encoder": ("ganforge.commands.training", "train_encoder_command"),
    "edit": ("ganforge.commands.training", "edit_command"),
    "encode": ("ganforge.commands.training", "encode_command"),
    "decode": ("ganforge.commands.training", "decode_command"),
    "augment-study": ("ganforge.commands.training", "augment_study_command"),
    "flags": ("ganforge.commands.flags", "flags_command"),
    "bench": ("ganforge.commands.bench", "bench_command"),
    "profile": ("ganforge.commands.bench", "profile_command"),
}
USAGE = f"usage: ganforge {{{','.join(COMMANDS)}}} [options]   (ganforge COMMAND --help for each)"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ganforge: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    run = getattr(importlib.import_module(module), function)
    try:
        with terminate_raises():  # SIGTERM unwinds like Ctrl-C: temporary files are removed on the way out
            return run(rest)
    except ValueError as exc:  # bad flags, data or checkpoints: one clear line, no traceback
        where = f" (rank {os.environ['RANK']})" if os.environ.get("WORLD_SIZE", "1") != "1" else ""  # torchrun
        print(f"ganforge {command}{where}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be written or read (a full disk, a read-only folder): one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ganforge {command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves and exits on its own)
        print(f"ganforge {command}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:  # SIGTERM outside a training loop
        print(f"ganforge {command}: terminated (SIGTERM)", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
