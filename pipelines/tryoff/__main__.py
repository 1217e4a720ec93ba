"""``python -m pipelines.tryoff``: the command line."""

import sys

from pipelines.tryoff.pipeline import main

sys.exit(main())
