"""Pipelines: turning images/prompts into DiT inputs and DiT outputs into 4D results."""
