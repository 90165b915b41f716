"""``python -m hermes_fast.cli``: the ``hermes-fast`` command."""

import sys

from .parser import main

sys.exit(main())
