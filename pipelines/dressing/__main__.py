"""``python -m pipelines.dressing``: the command line."""

import sys

from pipelines.dressing.pipeline import main

sys.exit(main())
