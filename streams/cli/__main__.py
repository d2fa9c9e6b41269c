"""``python -m streams.cli``: the ``ccmon`` command line without the installed entry point."""

import sys

from streams.cli import main

sys.exit(main())
