import sys

from stoppage.cli import main

sys.exit(main())
