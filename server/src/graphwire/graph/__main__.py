"""``python -m graphwire.graph validate|run|list ...``: KayGraph's ``kaygraph`` command (see `cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
