"""A throwaway certificate authority made with openssl, for tests of https endpoints."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certificates(directory: Path, names: tuple[str, ...] = ("localhost",)) -> dict[str, Path]:
    """A CA (``ca`` -> ca.pem) and, per name, a certificate it signed for that DNS name (and
    127.0.0.1 for "localhost"): ``name`` -> the path without suffix, add ``.pem`` or ``.key``."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    # With the extensions a real CA has: Python 3.13 (the services image) verifies with
    # VERIFY_X509_STRICT, which refuses a CA without key usage and a leaf without an
    # authority key identifier.
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=pgmsg test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
    )
    for name in names:
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        (directory / f"{name}.ext").write_text(
            f"subjectAltName=DNS:{name}{',IP:127.0.0.1' if name == 'localhost' else ''}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {"ca": directory / "ca.pem", **{name: directory / name for name in names}}
