"""Persistence and compiled inference: the bundle format (data, not pickles) and the tree walker."""
