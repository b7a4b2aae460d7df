"""Adapters that plug tqsearch collections into other frameworks (each needs its own extra installed)."""
