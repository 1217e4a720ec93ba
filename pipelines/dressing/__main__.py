"""``python -m pipelines.dressing``: the command line."""

import sys

from pipelines.dressing.cli import main

sys.exit(main())
