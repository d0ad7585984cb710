"""The gateway tests share the control-plane fixtures (served gateway)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "llm" / "conftest.py"
_spec = importlib.util.spec_from_file_location("sage_tests_llm_conftest", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules["sage_tests_llm_conftest"] = _module
_spec.loader.exec_module(_module)

gateway = _module.gateway
double = _module.double
