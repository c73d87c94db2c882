"""Small utilities shared by tools and tests (FLOP counting)."""
