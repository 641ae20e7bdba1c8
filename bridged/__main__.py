"""``python -m bridged`` is the ``bridged`` command."""

import sys

from bridged.cli import main

sys.exit(main())
