import sys

from urlproxy.cli import main

sys.exit(main())
