"""A minimal Pulsar binary-protocol client over a raw socket, for tests that
must send what the official client refuses to (e.g. a message over the
broker's advertised limit) so that the broker's own checks run.

Only what those tests need is encoded by hand: CONNECT, PRODUCER, SEND
(with the 0x0e01 magic, CRC32C and MessageMetadata) and PONG; replies are
decoded just enough to read their type and scalar fields. Field numbers are
PulsarApi.proto's.

Frame: [totalSize u32][commandSize u32][BaseCommand] and, for SEND,
[0x0e01][crc32c u32 of what follows][metadataSize u32][MessageMetadata][payload].
"""

import socket
import struct
import time

import crc32c

# BaseCommand.type values.
CONNECT = 2
CONNECTED = 3
PRODUCER = 5
SEND = 6
SEND_RECEIPT = 7
SEND_ERROR = 8
SUCCESS = 13
ERROR = 14
CLOSE_PRODUCER = 15
PRODUCER_SUCCESS = 17
PING = 18
PONG = 19

# BaseCommand field number of each command's body, by type.
BODY_FIELD = {
    CONNECT: 2,
    CONNECTED: 3,
    PRODUCER: 5,
    SEND: 6,
    SEND_RECEIPT: 7,
    SEND_ERROR: 8,
    SUCCESS: 13,
    ERROR: 14,
    CLOSE_PRODUCER: 15,
    PRODUCER_SUCCESS: 17,
    PING: 18,
    PONG: 19,
}

# ServerError values the tests name.
PERSISTENCE_ERROR = 2
CHECKSUM_ERROR = 9
NOT_ALLOWED_ERROR = 22


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def command(kind: int, body: bytes) -> bytes:
    """A BaseCommand of type `kind` with its body message."""
    return field_varint(1, kind) + field_bytes(BODY_FIELD[kind], body)


def decode(buf: bytes):
    """A protobuf message as {field number: [values]}: varints as ints,
    length-delimited fields as bytes (decode nested messages again)."""
    fields = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(buf: bytes, i: int):
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


class Reply:
    """One command from the broker: its type and its body's fields."""

    def __init__(self, kind: int, body: dict):
        self.kind = kind
        self.body = body

    def get(self, number: int, default=None):
        values = self.body.get(number)
        return values[0] if values else default

    def __repr__(self):
        return f"Reply(type={self.kind}, body={self.body})"


class RawConnection:
    """One TCP connection speaking the Pulsar protocol by hand."""

    def __init__(self, host: str, port: int, timeout_s: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.request_id = 0

    def close(self):
        self.sock.close()

    def send_frame(self, cmd: bytes, message_section: bytes = b""):
        total = 4 + len(cmd) + len(message_section)
        self.sock.sendall(struct.pack(">II", total, len(cmd)) + cmd + message_section)

    def read_reply(self, timeout_s: float = 10) -> Reply:
        """The next command other than PING (answered with PONG); raises
        ConnectionError if the broker closes the connection."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_one(deadline)
            if reply.kind == PING:
                self.send_frame(command(PONG, b""))
                continue
            return reply

    def _read_one(self, deadline: float) -> Reply:
        while True:
            if len(self.buf) >= 8:
                total, cmd_size = struct.unpack(">II", self.buf[:8])
                if len(self.buf) >= 4 + total:
                    cmd = self.buf[8 : 8 + cmd_size]
                    self.buf = self.buf[4 + total :]
                    fields = decode(cmd)
                    kind = fields[1][0]
                    body_field = BODY_FIELD.get(kind)
                    body = decode(fields[body_field][0]) if body_field in fields else {}
                    return Reply(kind, body)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the broker")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buf += chunk

    def connect(self) -> Reply:
        body = field_bytes(1, "raw-test-client") + field_varint(4, 19)  # protocol version 19
        self.send_frame(command(CONNECT, body))
        reply = self.read_reply()
        assert reply.kind == CONNECTED, f"CONNECT answered {reply}"
        return reply

    def create_producer(self, topic: str, producer_id: int) -> str:
        """PRODUCER; returns the producer name the broker assigned."""
        self.request_id += 1
        body = (
            field_bytes(1, topic)
            + field_varint(2, producer_id)
            + field_varint(3, self.request_id)
        )
        self.send_frame(command(PRODUCER, body))
        reply = self.read_reply()
        assert reply.kind == PRODUCER_SUCCESS, f"PRODUCER answered {reply}"
        return reply.get(2).decode()

    def send_message(self, producer_id: int, producer_name: str, sequence_id: int, payload: bytes):
        """SEND of one unbatched message (does not wait for the answer)."""
        cmd = command(
            SEND,
            field_varint(1, producer_id) + field_varint(2, sequence_id) + field_varint(3, 1),
        )
        metadata = (
            field_bytes(1, producer_name)
            + field_varint(2, sequence_id)
            + field_varint(3, int(time.time() * 1000))
        )
        checked = struct.pack(">I", len(metadata)) + metadata + payload
        section = b"\x0e\x01" + struct.pack(">I", crc32c.crc32c(checked)) + checked
        self.send_frame(cmd, section)
