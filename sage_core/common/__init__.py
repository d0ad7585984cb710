"""Foundations shared by every layer: settings, errors, ids and clocks."""
