"""Fixtures of the CLI tests: self-signed TLS certificates made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(directory: Path) -> tuple[str, str, str]:
    """A fresh CA and one certificate it signed, for every process of a test cluster
    (Dask does not check host names). Returns (CA file, certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=sage-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=sage-test",
        cwd=directory,
    )  # fmt: skip
    (directory / "leaf.ext").write_text(_LEAF_EXTENSIONS)
    _openssl(
        "x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "leaf.ext",
        cwd=directory,
    )  # fmt: skip
    return tuple(str(directory / name) for name in ("ca.pem", "cert.pem", "key.pem"))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def tls_maker() -> Callable[[Path], tuple[str, str, str]]:
    """``tls_maker(directory)`` -> (CA file, certificate, key); skips without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    return make_tls_files
