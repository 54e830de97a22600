"""Building blocks the model files are made of (linear, norm, rotary, activation, embedding)."""
