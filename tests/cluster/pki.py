"""Keys and certificates for one test control plane: a CA, one serving certificate for the
kube-apiserver and the operators' webhooks, the service-account signing key and an admin token."""

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The operators' cert rotators check that the CA in their Secret is valid for their own CA name
# and that the serving certificate is valid for their Service; with these names they keep ours
# instead of generating a CA the kube-apiserver does not trust.
CA_NAMES = ["kubetune-test-ca", "kueue-ca", "training-operator-ca"]
SERVING_NAMES = [
    "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "kueue-webhook-service.kueue-system.svc",  # Kueue's internalCertManagement default
    "training-operator.kubeflow.svc",  # Training Operator: <--webhook-service-name>.<namespace>.svc
    "kubeflow-trainer-controller-manager.kubeflow-system.svc",  # Trainer: its status server URL
]


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path  # also valid for 127.0.0.1, so webhooks can be called by URL
    serving_key: Path
    sa_key: Path  # signs service-account tokens (kube-apiserver, kube-controller-manager)
    sa_pub: Path
    admin_token: str

    def secret_data(self) -> dict[str, bytes]:
        """The Secret layout of the operators' cert rotators (open-policy-agent/cert-controller)."""
        return {"ca.crt": self.ca_cert.read_bytes(), "ca.key": self.ca_key.read_bytes(),
                "tls.crt": self.serving_cert.read_bytes(), "tls.key": self.serving_key.read_bytes()}


def write_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _rsa_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAMES[0])])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, now, days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in CA_NAMES]), False)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = _rsa_key()
    names = [x509.DNSName(n) for n in SERVING_NAMES] + [x509.IPAddress(ipaddress.ip_address(
        "127.0.0.1"))]
    serving = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ca_name,
                 key, now, days=365)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = _rsa_key()
    pki = Pki(folder / "ca.crt", folder / "ca.key", folder / "serving.crt", folder / "serving.key",
              folder / "sa.key", folder / "sa.pub", secrets.token_hex(16))
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.ca_key.write_bytes(_pem(ca_key))
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    pki.serving_key.write_bytes(_pem(key))
    pki.sa_key.write_bytes(_pem(sa_key))
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def _rsa_key():
    # RSA in PKCS#1: the cert rotators parse the CA key with x509.ParsePKCS1PrivateKey.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _builder(subject, issuer, key, now, days):
    # Valid from an hour ago: the rotators and clients reject certificates "not yet valid".
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_encipherment=not cert_sign,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, content_commitment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)
