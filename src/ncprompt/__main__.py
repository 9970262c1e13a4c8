"""``python -m ncprompt``: the ``ncprompt`` command."""

import sys

from ncprompt.cli import main

sys.exit(main())
