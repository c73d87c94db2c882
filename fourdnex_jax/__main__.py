"""``python -m fourdnex_jax SUBCOMMAND [flags]``: the same as the ``fourdnex`` command."""

import sys

from fourdnex_jax.cli.main import main

sys.exit(main())
