"""``python -m pipelines.tryon``: the command line."""

import sys

from pipelines.tryon.cli import main

sys.exit(main())
