"""``python -m worker.demo``: see :mod:`worker.demo._launch`."""

import sys

from worker.demo._launch import main

if __name__ == "__main__":
    sys.exit(main())
