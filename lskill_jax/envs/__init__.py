"""Environments the agents act in (ALFWorld, Search-QA)."""
