"""``python -m subnas``: the ``subnas`` command (`subnas.cli.main`)."""

import sys

from subnas.cli import main

sys.exit(main())
