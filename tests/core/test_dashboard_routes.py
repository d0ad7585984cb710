"""The SAGE dashboard routes on a bare tornado server (no Dask cluster needed)."""

from __future__ import annotations

from typing import Any


def test_sage_page_with_trailing_slash_lands_on_the_page(dashboard_get: Any) -> None:
    response = dashboard_get(None, "/sage/")
    assert response.code == 200
    assert response.effective_url.endswith("/sage")
    assert b"<title>SAGE jobs</title>" in response.body


def test_sage_page_without_slash_is_served_directly(dashboard_get: Any) -> None:
    response = dashboard_get(None, "/sage")
    assert response.code == 200
    assert response.effective_url.endswith("/sage")
