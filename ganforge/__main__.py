"""`python -m ganforge ...` is the `ganforge` command."""
import sys

from .cli import main

sys.exit(main())
