"""``python -m nes2net_stream`` runs the command line."""

import sys

from nes2net_stream.cli import main

sys.exit(main())
