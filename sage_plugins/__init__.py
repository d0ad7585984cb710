"""SAGE's built-in plugins: operators, routers, inference backends, vector indexes.

Each module here is registered through an entry point in group ``sage`` in
pyproject.toml, exactly as a third-party plugin package would register its own.
"""
