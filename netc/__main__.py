"""`python -m netc ...`: the `netc` command, for environments without the console script on PATH."""
import sys

from netc.cli import main

sys.exit(main())
