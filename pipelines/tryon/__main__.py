"""``python -m pipelines.tryon``: the command line."""

import sys

from pipelines.tryon.pipeline import main

sys.exit(main())
