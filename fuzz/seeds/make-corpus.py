#!/usr/bin/env python3
"""Writes the committed seed corpora, fuzz/corpus/<target>/<name>: small, real inputs
in each target's input layout (see fuzz/src/dialogue.rs and fuzz/src/ffi.rs).
Run it again after changing a layout; libFuzzer keeps what it finds elsewhere
(fuzz/work/), so these directories stay small."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dialogue(flags, pre, post=b""):
    """flags, split (u16 LE), then the bytes before TLS and the bytes after it."""
    return bytes([flags]) + struct.pack("<H", len(pre)) + pre + post


STARTTLS = 1  # ask for STARTTLS when offered
ALWAYS = 2

# --- SMTP / LMTP -----------------------------------------------------------------
ehlo = b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
after = b"250-mx.example.org\r\n250-AUTH PLAIN LOGIN\r\n250-REQUIRETLS\r\n250 SIZE 10240000\r\n"
put("client_smtp", "starttls-go", dialogue(STARTTLS, b"220 mx.example.org ESMTP Postfix\r\n" + ehlo + b"220 2.0.0 Ready to start TLS\r\n", after))
put("client_smtp", "lmtp-go", dialogue(STARTTLS | 0x80, b"220 lmtp.example LMTP ready\r\n" + ehlo + b"220 go ahead\r\n", after))
put("client_smtp", "multiline-greeting", dialogue(STARTTLS, b"220-mx.example.org ESMTP\r\n220-no UCE\r\n220 ok\r\n" + ehlo + b"220 Ready\r\n", after))
put("client_smtp", "refused-454", dialogue(STARTTLS, b"220 mx ESMTP\r\n" + ehlo + b"454 4.7.0 TLS not available due to local problem\r\n"))
put("client_smtp", "refused-554", dialogue(STARTTLS, b"220 mx ESMTP\r\n" + ehlo + b"554 5.7.3 no\r\n"))
put("client_smtp", "not-a-go-250", dialogue(STARTTLS, b"220 mx ESMTP\r\n" + ehlo + b"250 2.0.0 ok\r\n"))
put("client_smtp", "injection", dialogue(STARTTLS, b"220 mx ESMTP\r\n" + ehlo + b"220 Ready\r\n250-evil\r\n250 AUTH PLAIN\r\n"))
put("client_smtp", "greeting-554", dialogue(STARTTLS, b"554 5.3.2 go away\r\n"))
put("client_smtp", "no-starttls", dialogue(STARTTLS, b"220 mx ESMTP\r\n250-mx\r\n250 SIZE 1000\r\n"))
put("client_smtp", "always-helo-fallback", dialogue(ALWAYS, b"220 mx\r\n502 5.5.1 EHLO not implemented\r\n250 mx\r\n220 go\r\n", b"250 mx\r\n"))
put("client_smtp", "bare-lf", dialogue(STARTTLS, b"220 mx\n250-mx\n250 STARTTLS\n220 go\n", b"250-mx\n250 AUTH LOGIN\n"))

# --- IMAP ------------------------------------------------------------------------
imap_after = b"* CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE\r\nMT2 OK CAPABILITY completed\r\n"
put("client_imap", "greeting-caps-go", dialogue(STARTTLS, b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.\r\nMT1 OK Begin TLS negotiation now\r\n", imap_after.replace(b"MT2", b"MT2")))
put("client_imap", "capability-go", dialogue(STARTTLS, b"* OK ready\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\nMT1 OK done\r\nMT2 OK Begin TLS\r\n", b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nMT3 OK done\r\n"))
put("client_imap", "preauth", dialogue(STARTTLS, b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n"))
put("client_imap", "alert", dialogue(STARTTLS, b"* OK [ALERT] System going down\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\nMT1 OK\r\n* OK [ALERT] again\r\nMT2 OK go\r\n", b"* CAPABILITY IMAP4rev1\r\nMT3 OK\r\n"))
put("client_imap", "bye", dialogue(STARTTLS, b"* BYE too busy\r\n"))
put("client_imap", "starttls-no", dialogue(STARTTLS, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nMT1 NO not now\r\n"))
put("client_imap", "starttls-bad", dialogue(STARTTLS, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nMT1 BAD what\r\n"))
put("client_imap", "continuation", dialogue(STARTTLS, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n+ go ahead\r\n"))
put("client_imap", "literal", dialogue(STARTTLS, b"* OK hi\r\n* CAPABILITY {5}\r\n"))

# --- POP3 ------------------------------------------------------------------------
capa = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN\r\n.\r\n"
put("client_pop3", "stls-go", dialogue(STARTTLS, b"+OK POP3 ready <1.2@mx>\r\n" + capa + b"+OK Begin TLS negotiation\r\n", b"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"))
put("client_pop3", "stls-temp", dialogue(STARTTLS, b"+OK hi\r\n" + capa + b"-ERR [SYS/TEMP] later\r\n"))
put("client_pop3", "stls-perm", dialogue(STARTTLS, b"+OK hi\r\n" + capa + b"-ERR [SYS/PERM] never\r\n"))
put("client_pop3", "capa-err", dialogue(STARTTLS, b"+OK hi\r\n-ERR unknown command\r\n"))
put("client_pop3", "greeting-err", dialogue(STARTTLS, b"-ERR go away\r\n"))
put("client_pop3", "dot-stuffed", dialogue(STARTTLS, b"+OK hi\r\n+OK\r\n..odd\r\nSTLS\r\n.\r\n+OK go\r\n", b"+OK\r\n.\r\n"))

# --- NNTP ------------------------------------------------------------------------
caps = b"101 Capability list:\r\nVERSION 2\r\nREADER\r\nSTARTTLS\r\n.\r\n"
put("client_nntp", "starttls-go", dialogue(STARTTLS, b"200 news.example InterNetNews NNRP server ready\r\n" + caps + b"382 Continue with TLS negotiation\r\n", b"101 Capability list:\r\nVERSION 2\r\nAUTHINFO USER\r\n.\r\n"))
put("client_nntp", "greeting-201", dialogue(STARTTLS, b"201 no posting\r\n" + caps + b"580 Can not initiate TLS negotiation\r\n"))
put("client_nntp", "refused-502", dialogue(STARTTLS, b"200 hi\r\n" + caps + b"502 no\r\n"))
put("client_nntp", "greeting-400", dialogue(STARTTLS, b"400 service discontinued\r\n"))
put("client_nntp", "no-capabilities", dialogue(STARTTLS, b"200 hi\r\n500 What?\r\n"))

# --- ManageSieve -----------------------------------------------------------------
scaps = b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n"SIEVE" "fileinto reject"\r\n"SASL" ""\r\n"STARTTLS"\r\n"VERSION" "1.0"\r\nOK "Ready."\r\n'
put("client_sieve", "starttls-go", dialogue(STARTTLS, scaps + b'OK "Begin TLS negotiation now."\r\n', b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n"SASL" "PLAIN"\r\n"VERSION" "1.0"\r\nOK "TLS negotiation successful."\r\n'))
put("client_sieve", "trylater", dialogue(STARTTLS, scaps + b'NO (TRYLATER) "later"\r\n'))
put("client_sieve", "refused-no", dialogue(STARTTLS, scaps + b'NO "never"\r\n'))
put("client_sieve", "bye", dialogue(STARTTLS, scaps + b'BYE "bye"\r\n'))
put("client_sieve", "literal", dialogue(STARTTLS, b'"IMPLEMENTATION" {5}\r\nhello\r\nOK\r\n'))

# --- implicit TLS: the top three flag bits pick the protocol (0 smtp ... 5 sieve) --
put("client_implicit", "smtp", dialogue(0 << 5, b"", b"220 mx ESMTP\r\n" + after))
put("client_implicit", "lmtp", dialogue(1 << 5, b"", b"220 lmtp ready\r\n" + after))
put("client_implicit", "imap", dialogue(2 << 5, b"", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"))
put("client_implicit", "imap-ask", dialogue(2 << 5, b"", b"* OK ready\r\n* CAPABILITY IMAP4rev1\r\nMT1 OK\r\n"))
put("client_implicit", "pop3", dialogue(3 << 5, b"", b"+OK ready\r\n+OK\r\nUSER\r\n.\r\n"))
put("client_implicit", "nntp", dialogue(4 << 5, b"", b"200 ready\r\n101 caps\r\nVERSION 2\r\n.\r\n"))
put("client_implicit", "sieve", dialogue(5 << 5, b"", b'"IMPLEMENTATION" "x"\r\n"SASL" "PLAIN"\r\nOK\r\n'))

# --- server command checks: flags (bits 0-2 protocol, bit 3 require-TLS), lines ----
put("server_commands", "smtp", bytes([0]) + b"EHLO client.example\nMAIL FROM:<a@b>\nSTARTTLS\nAUTH PLAIN AGFAYg==\nQUIT")
put("server_commands", "smtp-require", bytes([8]) + b"ehlo x\nmail from:<a@b>\nnoop\nrset\nstarttls\nquit")
put("server_commands", "lmtp-login", bytes([1 | 8]) + b"LHLO x\n\x01AUTH PLAIN x\nSTARTTLS")
put("server_commands", "imap", bytes([2 | 8]) + b"a1 CAPABILITY\na2 LOGIN bob secret\n* LOGIN x\na+b STARTTLS\n\x01a3 AUTHENTICATE PLAIN\na4 STARTTLS\na5 LOGOUT")
put("server_commands", "pop3", bytes([3 | 8]) + b"CAPA\nUSER bob\nPASS x\nAPOP bob 0123\nSTLS\nQUIT")
put("server_commands", "nntp", bytes([4 | 8]) + b"CAPABILITIES\nAUTHINFO USER bob\nSTARTTLS\nQUIT")
put("server_commands", "sieve", bytes([5 | 8]) + b'CAPABILITY\nAUTHENTICATE "PLAIN" "AGJvYgB4"\nSTARTTLS\nLOGOUT')

# --- hello sniffer (the samples of src/tls/sniff.rs, and a real hello) -------------
def sslv2_hello(version):
    specs = bytes([0x01, 0x00, 0x80, 0x00, 0x00, 0x2F, 0x00, 0x00, 0x35])
    challenge = bytes([0x5A]) * 16
    n = 9 + len(specs) + len(challenge)
    return bytes([0x80 | (n >> 8), n & 0xFF, 0x01]) + struct.pack(">HHHH", version, len(specs), 0, len(challenge)) + specs + challenge


def tls_hello(record_version, client_version, tls13, extensions):
    body = struct.pack(">H", client_version) + bytes([0x11]) * 32 + b"\x00" + bytes([0, 4, 0x13, 1, 0xC0, 0x2F]) + b"\x01\x00"
    if extensions:
        ext = bytes([0, 0x0A, 0, 4, 0, 2, 0, 0x1D])
        if tls13:
            ext += bytes([0, 0x2B, 0, 5, 4, 3, 4, 3, 3])
        body += struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16" + struct.pack(">HH", record_version, len(hs)) + hs


with open(os.path.join(HERE, "openssl3-clienthello.bin"), "rb") as f:
    real_hello = f.read()
put("sniff", "sslv2-tls10", sslv2_hello(0x0301))
put("sniff", "sslv2-tls12", sslv2_hello(0x0303))
put("sniff", "ssl3", tls_hello(0x0300, 0x0300, False, False))
put("sniff", "tls10", tls_hello(0x0301, 0x0301, False, True))
put("sniff", "tls11", tls_hello(0x0301, 0x0302, False, True))
put("sniff", "tls12", tls_hello(0x0301, 0x0303, False, False))
put("sniff", "tls13", tls_hello(0x0301, 0x0303, True, True))
put("sniff", "openssl3-tls13", real_hello)
put("sniff", "plaintext", b"EHLO x\r\n")
put("sniff", "unknown", bytes([0x00, 0xFF, 0x13, 0x37]))


def fragmented(one_record, sizes):
    """The handshake message of a one-record hello re-cut into records of `sizes`
    bytes (the last size repeats), as RFC 8446 section 5.1 allows."""
    hdr, msg, out, i = one_record[:3], one_record[5:], b"", 0
    while msg:
        n = min(sizes[min(i, len(sizes) - 1)], len(msg))
        out += hdr + struct.pack(">H", n) + msg[:n]
        msg, i = msg[n:], i + 1
    return out


put("sniff", "tls13-records-3-then-rest", fragmented(tls_hello(0x0301, 0x0303, True, True), [3, 1000]))
put("sniff", "tls13-records-of-1", fragmented(tls_hello(0x0301, 0x0303, True, True), [1]))
put("sniff", "openssl3-records-of-64", fragmented(real_hello, [5, 64]))
put("sniff", "client-version-0401", tls_hello(0x0301, 0x0401, False, True))
put("sniff", "client-version-fefe", tls_hello(0x0301, 0xFEFE, False, False))
put("sniff", "appdata-first", bytes([0x17, 0x03, 0x03, 0x00, 0x01, 0x00]))

# --- memory file and store records (the format Memory writes) ---------------------
mem = (
    b"mailtls-memory 1\n"
    b"imap imap.example 993 tolerant=classic@1700000300 intolerant=modern@1700000100,intolerance,2,1700000000 pinned@1700000300 pq=no tls13@1700000300\n"
    b"nntp news.example 563 intolerant=tls12@1700000000,incompatible,1,1700000000\n"
    b"smtp mx.example.org 25 tolerant=modern@1700000000 pinned@1700000000 pq=yes tls13@1700000000\n"
    b"smtp old.example 25 tolerant=tls12@1700000000 sni-off@1700000000 pinned@1700000000 pq=no\n"
)
put("memory_file", "written", mem)
put("memory_file", "comments-and-bad-lines", b"mailtls-memory 1\n# a comment\n\nsmtp ok.example 25 pinned@5\nsmtp bad\nsmtp x 99999 pinned@1\nsieve s.example 4190 bogus=1\n")
put("memory_file", "truncated", mem[:-20])
put("memory_file", "foreign", b"mailtls-memory 2\nsmtp a 25 pinned@1\n")
put("memory_file", "empty", b"mailtls-memory 1\n")
key_a = b"4f4c44206b6579206f66206d61696c746c73207469636b6574732c2032303235"
key_b = b"4E4557206B6579206F66206D61696C746C73207469636B6574732C20323032362C206C6F6E676572"
put("ticket_key_file", "current-and-previous", b"# mailtls ticket keys, rotated daily\n\n" + key_b + b"\n# the previous key\n  " + key_a + b"  \r\n")
put("ticket_key_file", "current-only", key_a + b"\n")
put("ticket_key_file", "third-key", key_a + b"\n" + key_b + b"\n" + key_a + b"\n")
put("ticket_key_file", "short-odd-and-commented", b"0123456789abcdef\n" + key_a + b"0\n" + key_a + b" # current\n")
put("ticket_key_file", "comments-only", b"# no key yet\n\n")
put("store_record", "full", b"tolerant=classic@1700000300 intolerant=modern@1700000100,intolerance,2,1700000000 sni-off@1 pinned@1700000300 pq=no tls13@1700000300")
put("store_record", "pinned", b"tolerant=modern@1700000000 pinned@1700000000 pq=yes")
put("store_record", "incompatible", b"intolerant=tls12@1700000000,incompatible,1,1700000000")
put("store_record", "alternate-separators", b"tolerant@compact@5 pinned=6 tls13=7")
put("store_record", "bad", b"intolerant=modern@1,2,3 pq=maybe")

# --- FFI sequences: setup, wpattern (4), ops_len, ops, then the peer's stream ------
def segments(data, ctl=0xFF):
    """The peer's bytes as read-callback segments of 32 bytes (control 0xff)."""
    out = b""
    for i in range(0, len(data), 32):
        out += bytes([ctl]) + data[i : i + 32]
    return out


def ffi(setup, ops, stream, wpattern=b"\x00\x00\x00\x00"):
    return bytes([setup]) + wpattern + bytes([len(ops)]) + bytes(ops) + stream


smtp_pre = b"220 mx.example.org ESMTP\r\n" + ehlo + b"220 2.0.0 Ready to start TLS\r\n"
# client: proto in bits 1-3, implicit bit 4, policy bits 5-6 (0 none, 1 may, 2 encrypt, 3 verify), connector bit 7
put("ffi_session", "client-smtp-may", ffi(1 << 5, [], segments(smtp_pre)))
put("ffi_session", "client-smtp-encrypt-eagain", ffi(2 << 5, [0, 1, 1, 1, 1, 15, 6], segments(smtp_pre, 0x0F).replace(b"\x0f", b"\x00\x0f"), b"\x00\x40\x80\xc0"))
put("ffi_session", "client-smtp-none-data", ffi(0, [0, 3, 17] + list(b"MAIL FROM:<a@b>\r\n") + [2, 200, 4, 5, 6], segments(b"220 mx\r\n250 mx\r\n250 ok\r\n")))
put("ffi_session", "client-imap-may", ffi((2 << 1) | (1 << 5), [], segments(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nMT1 OK go\r\n")))
put("ffi_session", "client-pop3-refused", ffi((3 << 1) | (1 << 5), [], segments(b"+OK hi\r\n" + capa + b"-ERR [SYS/TEMP] no\r\n")))
put("ffi_session", "client-implicit-connector", ffi(0x10 | (2 << 5) | 0x80, [0, 15, 15, 6], segments(b"\x15\x03\x03\x00\x02\x02\x28" * 3, 0x3C)))
put("ffi_session", "client-nulls", ffi(1 << 5, [9, 12, 7, 13, 10] + list(b"mx.example") + [0, 9], segments(b"220 mx\r\n")))
# server: bit 0; variant bits 5-6 (bit 5 require-TLS, bit 6 legacy hellos handed off)
srv_ops = [7, 19] + list(b"EHLO client.example") + [8, 0, 0, 15, 2, 100, 3, 4] + list(b"hi\r\n") + [6, 11]
put("ffi_session", "server-smtp-tls13", ffi(1, srv_ops, segments(tls_hello(0x0301, 0x0303, True, True))))
put("ffi_session", "server-smtp-openssl-hello", ffi(1, srv_ops, segments(real_hello)))
put("ffi_session", "server-smtp-sslv2-handoff", ffi(1 | (2 << 5), srv_ops, segments(sslv2_hello(0x0301))))
put("ffi_session", "server-smtp-require-tls", ffi(1 | (1 << 5), [7, 9] + list(b"MAIL FROM") + [14, 30, 7, 8] + list(b"STARTTLS") + [0, 5] + list(b"QUIT\n"), segments(tls_hello(0x0301, 0x0301, False, True))))
put("ffi_session", "server-imap-tagged", ffi(1 | (2 << 1), [7, 11] + list(b"a1 STARTTLS") + [0, 0, 1, 1, 15], segments(b"EHLO x\r\n")))
put("ffi_session", "server-implicit", ffi(1 | (3 << 1), [10, 1, 1, 15, 2, 50], segments(real_hello)))
