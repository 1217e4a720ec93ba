"""``python -m pipelines.tryoff``: the command line."""

import sys

from pipelines.tryoff.cli import main

sys.exit(main())
