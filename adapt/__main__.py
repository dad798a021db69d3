"""`python -m adapt <command> ...` is the `adapt` command."""

import sys

from adapt.cli import main

sys.exit(main())
