"""`python -m repalign.cli`."""

import sys

from repalign.cli import main

sys.exit(main())
