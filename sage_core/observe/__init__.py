"""Metrics, traces, Prometheus export and the dashboard page."""
