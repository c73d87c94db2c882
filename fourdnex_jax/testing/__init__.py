"""Importable test helpers: numerics, random models and bundles, the torch reference, synthetic scenes.

Imported only by tests/, benchmarks/ and tools/, never by the library itself.
"""
