#!/usr/bin/env python3
"""A misbehaving middlebox in front of a real server (issue 6): relays a TCP
connection byte for byte, plaintext STARTTLS dialogue included, and looks at the
client's first TLS record (the ClientHello). Depending on MODE it resets the
connection there, the way TLS-intolerant boxes in the field do:

    proxy.py UPSTREAM_PORT MODE

    pass              relay everything
    reset-above:N     reset when the ClientHello record is longer than N bytes
    reset-tls13       reset when the ClientHello offers TLS 1.3 (supported_versions)

It listens on 127.0.0.1 port 0 and prints {"listening":"127.0.0.1:PORT"} first, then
one JSON line per connection: {"conn":N,"hello_bytes":L,"tls13":true,"action":"reset"}.
"""
import json
import socket
import struct
import sys
import threading

upstream_port = int(sys.argv[1])
mode = sys.argv[2]
limit = int(mode.split(":", 1)[1]) if mode.startswith("reset-above:") else None
lock = threading.Lock()
count = 0


def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def offers_tls13(rec):
    """Whether the ClientHello in record `rec` (header included) lists TLS 1.3."""
    try:
        p = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        p += 1 + rec[p]  # session id
        p += 2 + struct.unpack(">H", rec[p:p + 2])[0]  # cipher suites
        p += 1 + rec[p]  # compression methods
        end = p + 2 + struct.unpack(">H", rec[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            etype, elen = struct.unpack(">HH", rec[p:p + 4])
            if etype == 43:  # supported_versions
                body = rec[p + 5:p + 4 + elen]
                return any(body[i:i + 2] == b"\x03\x04" for i in range(0, len(body) - 1, 2))
            p += 4 + elen
    except (IndexError, struct.error):
        pass
    return False


def reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def handle(client, n):
    try:
        up = socket.create_connection(("127.0.0.1", upstream_port), timeout=30)
    except OSError as e:
        say({"conn": n, "action": "upstream-failed", "error": str(e)})
        reset(client)
        return
    up.settimeout(None)
    client.settimeout(None)
    threading.Thread(target=pump, args=(up, client), daemon=True).start()
    buf = b""
    try:
        # Plaintext lines go through as they come; the first TLS record is held whole.
        while True:
            data = client.recv(65536)
            if not data:
                up.shutdown(socket.SHUT_WR)
                return
            buf += data
            if buf[:1] != b"\x16":
                nl = buf.rfind(b"\n")
                if nl >= 0:
                    up.sendall(buf[:nl + 1])
                    buf = buf[nl + 1:]
                if buf[:1] != b"\x16":
                    continue
            if len(buf) < 5:
                continue
            need = 5 + struct.unpack(">H", buf[3:5])[0]
            if len(buf) < need:
                continue
            rec = buf[:need]
            tls13 = offers_tls13(rec)
            bad = (limit is not None and len(rec) > limit) or (mode == "reset-tls13" and tls13)
            say({"conn": n, "hello_bytes": len(rec), "tls13": tls13, "action": "reset" if bad else "pass"})
            if bad:
                reset(client)
                reset(up)
                return
            up.sendall(buf)
            break
        pump(client, up)
    except OSError:
        pass


def main():
    global count
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    say({"listening": "127.0.0.1:%d" % ls.getsockname()[1]})
    while True:
        c, _ = ls.accept()
        count += 1
        threading.Thread(target=handle, args=(c, count), daemon=True).start()


main()
