"""radixlm: a structured-generation language and serving runtime."""
