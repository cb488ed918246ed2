"""A SASL_SSL listener with ACLs for the test cluster (``KafkaCluster(..., security=...)``).

``SaslSsl.create(directory)`` makes a CA and a broker certificate (signed by it, for
127.0.0.1 and localhost) with openssl, and a second CA that signed nothing (a client that
trusts only it meets an untrusted broker). The cluster then serves clients on ``SASL_SSL``
with SCRAM-SHA-512, brokers talk to each other on it as the super user ``admin`` (its
SCRAM credential is written when the storage is formatted), and the StandardAuthorizer
denies whatever no ACL allows. The controllers keep a PLAINTEXT listener on loopback: its
principal (``User:ANONYMOUS``) is a super user, as a broker reaches its controllers there.

Test-support code, not part of the installed package.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from taskstream.errors import BrokerNotStarted

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerNotStarted(f"openssl {args[0]}: {result.stderr[-2000:]}")


def _make_ca(name: str, directory: Path) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=taskstream test {name}",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


@dataclass(frozen=True)
class SaslSsl:
    """What the secure cluster's nodes and its clients need: paths and the admin secret."""

    ca: Path  # the CA that signed the brokers' certificate: what a client must trust
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must fail
    keystore: Path  # PKCS#12: the broker's key and certificate chain
    keystore_password: str
    admin_password: str

    @classmethod
    def create(cls, directory: Path) -> SaslSsl:
        directory.mkdir(parents=True, exist_ok=True)
        ca = _make_ca("ca", directory)
        other_ca = _make_ca("other-ca", directory)
        (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
            "-out", "broker.csr", "-subj", "/CN=localhost", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "broker.crt",
            cwd=directory,
        )  # fmt: skip
        password = secrets.token_urlsafe(12)
        _openssl(
            "pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key",
            "-certfile", "ca.crt", "-name", "broker", "-out", "broker.p12",
            "-passout", f"pass:{password}", cwd=directory,
        )  # fmt: skip
        return cls(ca, other_ca, directory / "broker.p12", password, secrets.token_urlsafe(16))

    def broker_config(self) -> dict[str, str]:
        """A node's settings beyond its listeners (KafkaCluster.config names those)."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.admin_password}";'
        )
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> tuple[str, ...]:
        """kafka-storage format's arguments that write the admin's SCRAM credential."""
        return ("--add-scram", f"{MECHANISM}=[name={ADMIN},password={self.admin_password}]")

    def client_config(
        self, username: str = ADMIN, password: str | None = None, *, ca: Path | None = None
    ) -> dict[str, str]:
        """librdkafka settings of a client of `username` (default: the admin)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": username,
            "sasl.password": self.admin_password if password is None else password,
            "ssl.ca.location": str(ca or self.ca),
        }
