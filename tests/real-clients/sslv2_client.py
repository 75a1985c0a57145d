#!/usr/bin/env python3
"""A legacy SMTP client that sends an SSLv2-compatible ClientHello after STARTTLS,
as old MTAs still do, then delivers one message over the resulting TLS 1.0 session.

Built on tlslite-ng (PyPI): its ClientHello can be written in the SSLv2 format, and
its record layer writes SSLv2 record headers when its version says (0, 2). The
handshake otherwise runs as tlslite-ng's own TLS 1.0 client does (RSA key exchange,
AES-CBC: what such clients offer). Exit 0: delivered; 2: STARTTLS not offered; 3: the
handshake failed (refused, as a server without a legacy engine should).

--implicit: TLS from the first byte (RFC 8314, port 465), the greeting inside TLS.
--tls-hello: a TLS 1.0 ClientHello in the TLS record format instead (the other
legacy hello such clients send).

usage: sslv2_client.py HOST PORT FROM TO [--plaintext-if-not-offered] [--implicit] [--tls-hello]
"""
import socket
import sys

from tlslite import HandshakeSettings, TLSConnection
from tlslite.messages import ClientHello


class SSLv2HelloConnection(TLSConnection):
    """Sends its first ClientHello in the SSLv2-compatible format (RFC 5246 E.2)."""

    def _sendMsg(self, msg, randomizeFirstBlock=True, update_hashes=True):
        if isinstance(msg, ClientHello) and not getattr(self, "_v2_sent", False):
            self._v2_sent = True
            msg.ssl2 = True
            msg.extensions = None  # the SSLv2 format has no room for extensions
            saved = self._recordLayer.version
            self._recordLayer.version = (0, 2)
            try:
                for r in TLSConnection._sendMsg(self, msg, randomizeFirstBlock, update_hashes):
                    yield r
            finally:
                self._recordLayer.version = saved
            return
        for r in TLSConnection._sendMsg(self, msg, randomizeFirstBlock, update_hashes):
            yield r


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), lines


def legacy_handshake(sock, tls_hello):
    settings = HandshakeSettings()
    settings.minVersion = (3, 1)
    settings.maxVersion = (3, 1)
    settings.cipherNames = ["aes128", "aes256"]
    settings.macNames = ["sha"]
    settings.keyExchangeNames = ["rsa"]
    settings.useExtendedMasterSecret = False
    settings.useEncryptThenMAC = False
    conn = TLSConnection(sock) if tls_hello else SSLv2HelloConnection(sock)
    try:
        conn.handshakeClientCert(settings=settings)
    except Exception as e:  # refused: an alert or a close
        print(f"sslv2_client: handshake failed: {type(e).__name__}: {e}")
        return None
    print(f"sslv2_client: TLS {conn.version} {conn.getCipherName()}")
    return conn


def main():
    host, port, mfrom, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    plaintext_ok = "--plaintext-if-not-offered" in sys.argv
    implicit = "--implicit" in sys.argv
    tls_hello = "--tls-hello" in sys.argv
    sock = socket.create_connection((host, port), timeout=20)
    if implicit:
        conn = legacy_handshake(sock, tls_hello)
        if conn is None:
            return 3
        f = conn.makefile("rb")
        code, _ = reply(f)
        assert code == 220, code
        conn.sendall(b"EHLO legacy.test\r\n")
        code, _ = reply(f)
        assert code == 250, code
        send = conn.sendall
        offered = None
    else:
        f = sock.makefile("rb")
        code, _ = reply(f)
        assert code == 220, code
        sock.sendall(b"EHLO legacy.test\r\n")
        code, lines = reply(f)
        offered = any(l[4:].upper().startswith("STARTTLS") for l in lines)
        conn = None
    if offered:
        sock.sendall(b"STARTTLS\r\n")
        code, _ = reply(f)
        assert code == 220, code
        conn = legacy_handshake(sock, tls_hello)
        if conn is None:
            return 3
        conn.sendall(b"EHLO legacy.test\r\n")
        f = conn.makefile("rb")
        code, _ = reply(f)
        assert code == 250, code
        send = conn.sendall
    elif implicit:
        pass
    elif not plaintext_ok:
        print("sslv2_client: STARTTLS not offered")
        return 2
    else:
        print("sslv2_client: STARTTLS not offered: plaintext")
        send = sock.sendall
    for cmd in (f"MAIL FROM:<{mfrom}>", f"RCPT TO:<{rcpt}>", "DATA"):
        send(cmd.encode() + b"\r\n")
        code, lines = reply(f)
        assert code in (250, 354), (cmd, lines)
    what = "a TLS 1.0" if tls_hello else "an SSLv2-compatible"
    send(f"Subject: from a legacy client\r\n\r\nsent after {what} hello\r\n.\r\n".encode())
    code, lines = reply(f)
    assert code == 250, lines
    send(b"QUIT\r\n")
    reply(f)
    if conn:
        conn.close()
    print("sslv2_client: delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
