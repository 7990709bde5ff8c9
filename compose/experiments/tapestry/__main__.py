"""``python -m compose.experiments.tapestry --out DIR ...`` (see `command.main`)."""
import sys

from .command import main

sys.exit(main())
