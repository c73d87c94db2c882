"""The error metrics of the tests: :mod:`fourdnex_jax.utils.numerics` (their one definition), under the name the
test suite imports."""

from fourdnex_jax.utils.numerics import psnr as psnr
from fourdnex_jax.utils.numerics import rel_l2 as rel_l2
