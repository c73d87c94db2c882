"""Geometry of pointmap videos (NumPy on the CPU, splatting in JAX): from a generated XYZ video to cameras, depth,
exports and novel views.

Bottom to top: :mod:`se3` (conventions, projection, rigid motions), :mod:`robust` (robust error statistics),
:mod:`normalize` (the XYZ normalisation contract), :mod:`intrinsics` (K, DLT), :mod:`pose` (P3P, calibrated DLT,
the batched robust pose solver), :mod:`register` (a whole video), :mod:`exports` / :mod:`render` /
:mod:`trajectories` / :mod:`metrics`, and :mod:`scene` (arrays in, files out). :mod:`adam_reference` is the 4DNeX
optimisation baseline of the register benchmark.
"""
