"""``python -m mailguard``: the same command as ``mailguard``."""
from __future__ import annotations

import sys

from mailguard.cli import main

sys.exit(main())
