"""``python -m pipelines.temu``: the command line."""

import sys

from pipelines.temu.cli import main

sys.exit(main())
