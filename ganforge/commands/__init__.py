"""The command layer: every parser and subcommand of `ganforge`, above everything they call. ganforge.cli loads
each of these modules only when its subcommand runs."""
