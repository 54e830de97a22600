"""radix_cache."""
