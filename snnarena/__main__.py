import sys

from snnarena.cli import main

sys.exit(main())
