"""``python -m compose ...`` is the ``compose`` command, e.g. ``torchrun -m compose sample ...``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
