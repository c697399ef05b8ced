"""`python -m kickvision.cli ...` runs the `kickvision` command."""

import sys

from kickvision.cli import main

sys.exit(main())
