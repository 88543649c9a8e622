"""Token authentication and authorization with the official client, on a
standalone started with --auth-enabled (HS256 key made by `magnetar tokens
create-secret-key`, superuser role `admin`). Tokens are made with `magnetar
tokens create`, except the expired one, which is signed here with the same
key so that no test waits for a clock.
"""

import base64
import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pulsar
import pytest

from conftest import REPO, Standalone, magnetar_bin
from support import close_quietly, wait_until

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

SUPERUSER = "admin"


def magnetar_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(magnetar_bin()), *args], capture_output=True, text=True, timeout=60
    )


def cli_ok(*args) -> str:
    done = magnetar_cli(*args)
    assert done.returncode == 0, f"magnetar {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The broker's secret key file and another key that it does not know."""
    root = tmp_path_factory.mktemp("auth-keys")
    secret, other = root / "secret.key", root / "other.key"
    cli_ok("tokens", "create-secret-key", "--output", str(secret))
    cli_ok("tokens", "create-secret-key", "--output", str(other))
    assert secret.read_text() != other.read_text()
    return secret, other


def token(key_file, role, *extra) -> str:
    return cli_ok("tokens", "create", "--secret-key", str(key_file), "--subject", role, *extra)


@pytest.fixture
def magnetar_args(keys):
    return [
        "--auth-enabled",
        "--token-secret-key", str(keys[0]),
        "--superuser-roles", f"{SUPERUSER},ops",
        # Open connections' tokens are checked every second (Pulsar's
        # authenticationRefreshCheckSeconds), so expiry is seen quickly.
        "--auth-refresh-check", "1s",
    ]


@pytest.fixture
def client_as(new_client):
    """A client authenticating with `token` (None: no authentication)."""

    def make(tok):
        if tok is None:
            return new_client()
        return new_client(authentication=pulsar.AuthenticationToken(tok))

    return make


def rest(server, method, path, tok=None, body=None):
    """One admin REST call; (status, decoded JSON or None)."""
    headers = {"Content-Type": "application/json"}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    request = urllib.request.Request(
        server.http_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def signed_token(key_file, role, exp) -> str:
    """An HS256 token for `role` expiring at `exp` (seconds since the epoch)."""
    key = base64.b64decode(key_file.read_text().strip())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": role, "exp": int(exp)}).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def expired_token(key_file, role) -> str:
    """An HS256 token for `role` that expired an hour ago."""
    return signed_token(key_file, role, time.time() - 3600)


def first_message(client, topic):
    """Subscribes from the earliest message, publishes a marker, and returns
    the first message received: the marker unless something was stored
    before it."""
    consumer = client.subscribe(
        topic,
        f"check-{uuid.uuid4().hex[:6]}",
        initial_position=pulsar.InitialPosition.Earliest,
    )
    client.create_producer(topic).send(b"marker")
    return consumer.receive(timeout_millis=10_000).data()


def test_superuser_produces_and_consumes(magnetar, client_as, keys, topic):
    client = client_as(token(keys[0], SUPERUSER))
    consumer = client.subscribe(topic, "sub")
    producer = client.create_producer(topic)
    for i in range(5):
        producer.send(b"m%d" % i)
    got = [consumer.receive(timeout_millis=10_000).data() for _ in range(5)]
    assert got == [b"m%d" % i for i in range(5)]
    # A second superuser role works as well.
    other = client_as(token(keys[0], "ops"))
    assert other.create_producer(topic).send(b"from ops") is not None


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("none", "no token was given"),
        ("bad-signature", "token signature is invalid"),
        ("expired", "token has expired"),
    ],
)
def test_unauthenticated_clients_are_refused_and_store_nothing(
    magnetar, client_as, new_client, keys, topic, kind, reason
):
    """The broker answers CONNECT with ERROR(AuthenticationError) and closes,
    as Pulsar does. The C++ client behind pulsar-client treats any answer
    but CONNECTED as a failed connection and retries until its operation
    timeout, so what it raises is a timeout; the reason is in the log."""
    tok = {
        "none": None,
        "bad-signature": token(keys[1], SUPERUSER),
        "expired": expired_token(keys[0], SUPERUSER),
    }[kind]
    options = dict(operation_timeout_seconds=3)
    if tok is not None:
        options["authentication"] = pulsar.AuthenticationToken(tok)
    client = new_client(**options)
    with pytest.raises(pulsar.PulsarException):
        client.create_producer(topic).send(b"must not be stored")
    with pytest.raises(pulsar.PulsarException):
        client.subscribe(topic, "sub")
    assert f"authentication failed: {reason}" in magnetar.log_tail(200)
    admin_token = token(keys[0], SUPERUSER)
    admin = client_as(admin_token)
    assert first_message(admin, topic) == b"marker"
    # No subscription was created by the refused client either.
    stats_path = "/admin/v2/persistent/" + topic[len("persistent://"):] + "/stats"
    status, stats = rest(magnetar, "GET", stats_path, admin_token)
    assert status == 200
    assert "sub" not in stats["subscriptions"]


def test_permissions_decide_produce_and_consume(magnetar, client_as, keys, topic):
    admin_token = token(keys[0], SUPERUSER)
    app_token = token(keys[0], "app")
    ns = "public/default"
    cli_admin = ("admin", "--admin-url", magnetar.http_url, "--auth-token", admin_token)

    # Without any grant the role may not even look the topic up.
    app = client_as(app_token)
    with pytest.raises(pulsar.AuthorizationError):
        app.subscribe(topic, "sub")

    cli_ok(*cli_admin, "namespaces", "grant-permission", ns, "--role", "app", "--actions", "consume")
    granted = json.loads(cli_ok(*cli_admin, "namespaces", "permissions", ns))
    assert granted == {"app": ["consume"]}

    consumer = app.subscribe(topic, "sub")
    with pytest.raises(pulsar.AuthorizationError):
        app.create_producer(topic)
    admin = client_as(admin_token)
    admin.create_producer(topic).send(b"from admin")
    assert consumer.receive(timeout_millis=10_000).data() == b"from admin"

    cli_ok(*cli_admin, "namespaces", "grant-permission", ns, "--role", "app",
           "--actions", "produce,consume")
    producer = client_as(app_token).create_producer(topic)
    producer.send(b"from app")
    assert consumer.receive(timeout_millis=10_000).data() == b"from app"

    # Revoked: new producers and subscriptions are refused again.
    cli_ok(*cli_admin, "namespaces", "revoke-permission", ns, "--role", "app")
    assert json.loads(cli_ok(*cli_admin, "namespaces", "permissions", ns)) == {}
    with pytest.raises(pulsar.AuthorizationError):
        client_as(app_token).create_producer(topic)


def test_admin_rest_needs_a_token_and_a_role(magnetar, keys):
    path = "/admin/v2/namespaces/public/default/permissions"
    status, body = rest(magnetar, "GET", path)
    assert status == 401 and "reason" in body
    status, _ = rest(magnetar, "GET", path, token(keys[1], SUPERUSER))
    assert status == 401
    status, body = rest(magnetar, "GET", path, token(keys[0], "app"))
    assert status == 403 and "app" in body["reason"]
    status, body = rest(magnetar, "GET", path, token(keys[0], SUPERUSER))
    assert (status, body) == (200, {})

    # A tenant's admin role administers its tenant, but only superusers
    # create tenants.
    admin_token = token(keys[0], SUPERUSER)
    status, _ = rest(magnetar, "PUT", "/admin/v2/tenants/acme", token(keys[0], "acme-admin"),
                     {"adminRoles": [], "allowedClusters": ["standalone"]})
    assert status == 403
    status, _ = rest(magnetar, "PUT", "/admin/v2/tenants/acme", admin_token,
                     {"adminRoles": ["acme-admin"], "allowedClusters": ["standalone"]})
    assert status == 204
    status, _ = rest(magnetar, "PUT", "/admin/v2/namespaces/acme/orders", token(keys[0], "acme-admin"))
    assert status == 204
    status, _ = rest(magnetar, "PUT", "/admin/v2/namespaces/public/other", token(keys[0], "acme-admin"))
    assert status == 403
    denied = magnetar_cli("admin", "--admin-url", magnetar.http_url,
                          "--auth-token", token(keys[0], "acme-admin"), "tenants", "create", "evil")
    assert denied.returncode == 1 and "403" in denied.stderr

    # Metrics and health stay open.
    for open_path in ["/metrics", "/health"]:
        with urllib.request.urlopen(magnetar.http_url + open_path, timeout=10) as r:
            assert r.status == 200


def test_rs256_tokens(tmp_path, topic):
    """--token-public-key: tokens signed with the private key pass, tokens
    under a shared secret do not."""
    data = REPO / "broker" / "tests" / "data"
    server = Standalone(magnetar_bin(), tmp_path, extra_args=[
        "--auth-enabled",
        "--token-public-key", str(data / "rs256-public.pem"),
        "--superuser-roles", SUPERUSER,
    ])
    clients = []

    def client(tok, timeout=15):
        c = pulsar.Client(server.url, authentication=pulsar.AuthenticationToken(tok),
                          operation_timeout_seconds=timeout, connection_timeout_ms=5000,
                          logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
        clients.append(c)
        return c

    try:
        server.start()
        good = cli_ok("tokens", "create", "--private-key", str(data / "rs256-private.pem"),
                      "--subject", SUPERUSER)
        c = client(good)
        consumer = c.subscribe(topic, "sub")
        c.create_producer(topic).send(b"signed")
        assert consumer.receive(timeout_millis=10_000).data() == b"signed"
        secret = tmp_path / "secret.key"
        cli_ok("tokens", "create-secret-key", "--output", str(secret))
        with pytest.raises(pulsar.PulsarException):
            client(token(secret, SUPERUSER), timeout=3).create_producer(topic)
        assert "authentication failed: token signature is invalid" in server.log_tail(200)
    finally:
        for c in clients:
            close_quietly(c)
        server.kill9()


def test_auth_on_without_a_key_is_a_startup_error(tmp_path):
    done = subprocess.run(
        [str(magnetar_bin()), "standalone", "--data-dir", str(tmp_path / "data"),
         "--auth-enabled"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "--token-secret-key" in done.stderr


def test_a_connection_outlives_its_token_only_with_a_fresh_one(magnetar, new_client, keys, topic):
    """Tokens are checked on open connections, not only at CONNECT: once a
    token expires the broker sends AUTH_CHALLENGE; a client whose token
    supplier hands out a fresh token keeps its connection, one that can
    only answer with the expired token is disconnected."""
    issued = []

    def fresh():
        issued.append(time.time())
        return signed_token(keys[0], SUPERUSER, time.time() + 3)

    refreshing = new_client(authentication=pulsar.AuthenticationToken(fresh))
    producer = refreshing.create_producer(topic)
    producer.send(b"before expiry")
    first_expiry = issued[0] + 3
    # Challenged after the first token expired, answered with a new one.
    wait_until(lambda: len(issued) >= 2 and time.time() > first_expiry + 1, 30, "a challenge answered")
    producer.send(b"after expiry")

    stuck = signed_token(keys[0], "ops", time.time() + 3)
    fixed = new_client(
        authentication=pulsar.AuthenticationToken(stuck), operation_timeout_seconds=3
    )
    fixed.create_producer(topic).send(b"while valid")
    wait_until(
        lambda: "did not answer AUTH_CHALLENGE" in magnetar.log_tail(300)
        or "token has expired" in magnetar.log_tail(300),
        30,
        "the broker to close the connection of the expired token",
    )
    # Reconnecting with the same token is refused too.
    with pytest.raises(pulsar.PulsarException):
        fixed.create_producer(topic + "-late").send(b"must not be stored")
    # The refreshing client was never cut off.
    producer.send(b"still connected")
    closed = [
        line
        for line in magnetar.log_tail(500).splitlines()
        if "closing connection" in line and 'role=Some("admin")' in line
    ]
    assert not closed, closed
