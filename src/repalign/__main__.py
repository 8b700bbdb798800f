"""`python -m repalign`."""

import sys

from repalign.cli import main

sys.exit(main())
