"""``python -m bridged.loadtest [OPTIONS]``: the same as ``bridged loadtest``."""

import sys

from bridged.loadtest import _standalone

sys.exit(_standalone())
