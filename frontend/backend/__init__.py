"""Backends: where a program's gens and selects are executed."""
