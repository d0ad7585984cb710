"""SAGE's built-in scheduling policies: pure classes (no pluggy, no Dask imports).

Placement policies choose workers for replicas; request policies order queued LLM and
embedding requests. ``schedulers.plugin`` registers them through the ``sage`` entry points.
"""
