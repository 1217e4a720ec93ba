"""``python -m pipelines.garment``: the command line."""

import sys

from pipelines.garment.pipeline import main

sys.exit(main())
