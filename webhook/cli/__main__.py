"""``python -m webhook.cli``: the ``podgate`` command."""

import sys

from .commands import main

sys.exit(main())
