"""Runtimes executing plans: local threads, Dask actors, and the SAGE process hooks."""
