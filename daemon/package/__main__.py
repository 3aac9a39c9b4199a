"""``python -m ingestd``: the ``ingestd`` command."""
import sys

from ingestd.daemon.cli import main

sys.exit(main())
