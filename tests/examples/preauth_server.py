#!/usr/bin/env python3
"""An IMAP server that greets every connection with PREAUTH, as an attacker who strips
STARTTLS would (or, over implicit TLS, as a server that authenticates by certificate
or address does). It answers CAPABILITY, SELECT, FETCH and LOGOUT, and records every
line it received, so that a test can prove no LOGIN or AUTHENTICATE ever arrived; "-- closed" follows
each connection's lines once it has ended.

    preauth_server.py LOG [--tls CERT KEY]

Prints {"listening":"127.0.0.1:PORT"} and serves connections until killed. A test
fixture, never part of the library.
"""
import json
import socket
import ssl
import sys


def serve(conn, log):
    f = conn.makefile("rwb", buffering=0)
    f.write(b"* PREAUTH [CAPABILITY IMAP4rev1] logged in as the attacker's guest\r\n")
    while True:
        line = f.readline(8192)
        if not line:
            return
        with open(log, "ab") as out:
            out.write(line)
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            continue
        tag, cmd = parts[0], parts[1].upper()
        if cmd == "CAPABILITY":
            f.write(b"* CAPABILITY IMAP4rev1\r\n" + tag.encode() + b" OK done\r\n")
        elif cmd == "SELECT":
            f.write(b"* 0 EXISTS\r\n" + tag.encode() + b" OK [READ-WRITE] selected\r\n")
        elif cmd == "LOGOUT":
            f.write(b"* BYE\r\n" + tag.encode() + b" OK bye\r\n")
            return
        else:
            # LOGIN and AUTHENTICATE in the authenticated state are protocol errors.
            f.write(tag.encode() + b" BAD not in this state\r\n")


def main():
    log = sys.argv[1]
    ctx = None
    if len(sys.argv) == 5 and sys.argv[2] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    print(json.dumps({"listening": "127.0.0.1:%d" % ls.getsockname()[1]}), flush=True)
    while True:
        conn, _ = ls.accept()
        conn.settimeout(30)
        try:
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            serve(conn, log)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()
            with open(log, "ab") as out:
                out.write(b"-- closed\n")


if __name__ == "__main__":
    main()
