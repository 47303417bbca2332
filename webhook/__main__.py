"""``python -m webhook``: the ``podgate`` command."""

import sys

from .cli.commands import main

sys.exit(main())
