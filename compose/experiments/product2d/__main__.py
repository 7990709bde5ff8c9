"""``python -m compose.experiments.product2d --out DIR ...`` (see `command.main`)."""
import sys

from .command import main

sys.exit(main())
