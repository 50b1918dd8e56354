"""``python -m bridge`` runs the ``faxbridge`` command line."""

import sys

from bridge.cli import main

sys.exit(main())
