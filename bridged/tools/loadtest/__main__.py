"""``python -m bridged.tools.loadtest [OPTIONS]``: the same as ``bridged loadtest``."""

import sys

from bridged.tools.loadtest import _standalone

sys.exit(_standalone())
