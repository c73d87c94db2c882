"""Small utilities at the bottom of the package (they import nothing else from fourdnex_jax): nested-dict flatten /
nest (tree), device peak TFLOP/s (devices), a one-line progress report (progress)."""
