"""``python -m gracefill.sources``: see `gracefill.sources.cli`."""
import sys

from gracefill.sources.cli import main

sys.exit(main())
