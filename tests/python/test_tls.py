"""TLS for clients, as Pulsar users have it: the official client over
`pulsar+ssl://` trusting the CA the test makes, HTTPS admin, and client
certificates required once the broker is given CAs to check them with."""

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import tempfile
import urllib.request
from pathlib import Path

import pulsar
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster import cluster_factory, unique  # noqa: F401  (fixture)
from conftest import Standalone, free_port, magnetar_bin
from support import close_quietly, index_of, produce, receive_n


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer, issuer_key, *, ca=False, usage=None, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate it
    signed, and an unrelated CA; PEM files under `root`."""

    def __init__(self, root: Path):
        self.root = root
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("magnetar-test-ca", ca_key, "magnetar-test-ca", ca_key, ca=True)
        self.ca = self._write("ca.pem", ca)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other = _certificate("other-ca", other_key, "other-ca", other_key, ca=True)
        self.other_ca = self._write("other-ca.pem", other)
        for role, usage, sans in (
            ("broker", ExtendedKeyUsageOID.SERVER_AUTH,
             (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))),
            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, ()),
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(role, key, "magnetar-test-ca", ca_key, usage=usage, sans=sans)
            setattr(self, role, self._write(f"{role}.pem", cert))
            setattr(self, f"{role}_key", self._write_key(f"{role}-key.pem", key))

    def _write(self, name, cert):
        path = self.root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)

    def _write_key(self, name, key):
        path = self.root / name
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return str(path)


@pytest.fixture(scope="module")
def pki():
    root = Path(tempfile.mkdtemp(prefix="magnetar-pki-"))
    yield Pki(root)
    shutil.rmtree(root, ignore_errors=True)


class TlsServer:
    """A standalone serving TLS on its own ports, beside plain ones."""

    def __init__(self, pki, trust_client_certs=False):
        self.root = Path(tempfile.mkdtemp(prefix="magnetar-tls-"))
        self.tls_port, self.https_port = free_port(), free_port()
        args = ["--tls-cert", pki.broker, "--tls-key", pki.broker_key,
                "--tls-listen", f"127.0.0.1:{self.tls_port}",
                "--https", f"127.0.0.1:{self.https_port}"]
        if trust_client_certs:
            args += ["--tls-trust-certs", pki.ca]
        self.server = Standalone(magnetar_bin(), self.root, extra_args=args)
        self.clients = []

    @property
    def url(self):
        return f"pulsar+ssl://127.0.0.1:{self.tls_port}"

    def client(self, **options):
        settings = dict(operation_timeout_seconds=10, connection_timeout_ms=3000,
                        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        settings.update(options)
        client = pulsar.Client(self.url, **settings)
        self.clients.append(client)
        return client

    def stop(self):
        for client in self.clients:
            close_quietly(client)
        self.server.kill9()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def tls_server(pki):
    server = TlsServer(pki)
    server.server.start()
    yield server
    server.stop()


def _round_trip(client, topic, count=200):
    consumer = client.subscribe(topic, "tls-sub")
    produce(client, topic, count)
    got = [index_of(m) for m in receive_n(consumer, count, ack=True)]
    assert got == list(range(count))


def test_the_official_client_produces_and_consumes_over_tls(tls_server, pki):
    client = tls_server.client(tls_trust_certs_file_path=pki.ca)
    _round_trip(client, "persistent://public/default/over-tls")
    # The plain port serves on beside it.
    plain = pulsar.Client(tls_server.server.url, operation_timeout_seconds=10)
    try:
        _round_trip(plain, "persistent://public/default/beside-tls", count=20)
    finally:
        close_quietly(plain)


def test_a_client_that_trusts_another_ca_is_refused(tls_server, pki):
    stranger = tls_server.client(tls_trust_certs_file_path=pki.other_ca)
    with pytest.raises(Exception):
        stranger.create_producer("persistent://public/default/not-trusted")


def test_https_admin_with_the_brokers_certificate(tls_server, pki):
    url = f"https://127.0.0.1:{tls_server.https_port}/admin/v2/tenants"
    trusting = ssl.create_default_context(cafile=pki.ca)
    with urllib.request.urlopen(url, context=trusting, timeout=10) as response:
        assert "public" in json.loads(response.read())
    lookup = f"https://127.0.0.1:{tls_server.https_port}/lookup/v2/topic/persistent/public/default/x"
    with urllib.request.urlopen(lookup, context=trusting, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["brokerUrlTls"] == tls_server.url, answer
    assert answer["httpUrlTls"] == f"https://127.0.0.1:{tls_server.https_port}", answer
    other = ssl.create_default_context(cafile=pki.other_ca)
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(url, context=other, timeout=10)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError), refused.value


def test_garbage_on_the_tls_port_costs_only_that_connection(tls_server, pki):
    for junk in (b"\x00\x00\x00\x0bnot a hello", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\xff\xff" + b"\x00" * 64):
        with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) as s:
            s.sendall(junk)
            s.settimeout(10)
            try:
                assert s.recv(1024) is not None
            except (ConnectionResetError, socket.timeout):
                pass
    client = tls_server.client(tls_trust_certs_file_path=pki.ca)
    _round_trip(client, "persistent://public/default/after-garbage", count=20)


def test_client_certificates_are_required_when_the_broker_trusts_a_ca(pki):
    server = TlsServer(pki, trust_client_certs=True)
    server.server.start()
    try:
        anonymous = server.client(tls_trust_certs_file_path=pki.ca)
        with pytest.raises(Exception):
            anonymous.create_producer("persistent://public/default/needs-a-cert")
        certified = server.client(
            tls_trust_certs_file_path=pki.ca,
            authentication=pulsar.AuthenticationTLS(pki.client, pki.client_key),
        )
        _round_trip(certified, "persistent://public/default/with-a-cert", count=20)
    finally:
        server.stop()


def _location_of_redirect(url, context=None):
    """The Location of the redirect `url` answers with (not followed)."""
    class NoFollow(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers = [NoFollow()] + ([urllib.request.HTTPSHandler(context=context)] if context else [])
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.build_opener(*handlers).open(url, timeout=10)
    assert answered.value.code == 307, answered.value
    return answered.value.headers["Location"]


def test_admin_redirects_keep_https_clients_on_https(cluster_factory, pki):
    """An admin request about a topic another broker owns is redirected to
    the owner: over HTTPS to its HTTPS address, over HTTP to its plain one."""
    c = cluster_factory(brokers=2, bookies=3, tls=(pki.broker, pki.broker_key))
    c.create_namespace("tls", "ns", ensemble=2, write_quorum=2, ack_quorum=2)
    topic = f"persistent://tls/ns/{unique('redirected')}"
    c.client().create_producer(topic).send(b"stored")
    owner = c.owner_of(topic)
    other = next(b for b in c.brokers if b is not owner)
    path = f"/admin/v2/{topic.replace('://', '/')}/stats"
    trusting = ssl.create_default_context(cafile=pki.ca)
    over_https = _location_of_redirect(other.https_url + path, trusting)
    assert over_https.startswith(owner.https_url + path), over_https
    over_http = _location_of_redirect(other.http_url + path)
    assert over_http.startswith(owner.http_url + path), over_http
    # The owner answers the redirected request over HTTPS.
    with urllib.request.urlopen(over_https, context=trusting, timeout=10) as response:
        assert "subscriptions" in json.loads(response.read())
