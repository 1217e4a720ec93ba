"""``python -m pipelines.posedesign``: the command line."""

import sys

from pipelines.posedesign.cli import main

sys.exit(main())
