"""constrained."""
