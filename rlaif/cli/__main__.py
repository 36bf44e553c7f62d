"""``python -m rlaif.cli``: the same entry point as the ``rlaif`` script."""

import sys

from rlaif.cli import main

sys.exit(main())
