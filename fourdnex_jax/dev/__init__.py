"""Developer commands (``python -m fourdnex_jax.dev COMMAND``): building the shipped tiny bundle and recording the
torch-free parity fixtures. Kept out of the user's ``fourdnex`` command; the only product room allowed to import
:mod:`fourdnex_jax.testing` (the torch oracle), see :data:`fourdnex_jax.testing.import_graph.LAYERS`."""
