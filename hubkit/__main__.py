"""``python -m hubkit ...``: the same command line as ``hubkit`` (see ``hubkit.cli``)."""

from __future__ import annotations

import sys

from hubkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
