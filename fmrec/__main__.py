"""``python -m fmrec``: the ``fmrec`` command."""

import sys

from fmrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
