"""The ``fourdnex`` command (``python -m fourdnex_jax``): one subcommand module per job, absl flags throughout
(:mod:`fourdnex_jax.cli.common` holds the conventions; :mod:`fourdnex_jax.cli.main` the list of subcommands)."""
