"""``python -m pipelines.garment``: the command line."""

import sys

from pipelines.garment.cli import main

sys.exit(main())
