"""``python -m compose.experiments.digits --out DIR ...`` (see `command.main`)."""
import sys

from .command import main

sys.exit(main())
