"""`python -m blocklist.cli`."""

import sys

from blocklist.cli import main

sys.exit(main())
