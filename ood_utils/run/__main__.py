"""``python -m ood_utils.run``: see :mod:`ood_utils.run`."""
import sys

from .cli import main

sys.exit(main())
