#!/usr/bin/env python3
"""Hostile and malformed commands against mailtls-server's IMAP, POP3, NNTP and
ManageSieve dialogues (plaintext, logged in where the protocol needs it).

    mailbox_junk.py PROTO PORT USER PASS

Every line must get an answer of the protocol's own form (a tagged BAD/NO, -ERR, a
4xx/5xx code, NO "..."), never a crash, a hang or a dropped connection, and the
final QUIT/LOGOUT must still be answered. Prints how many commands were answered.
"""
import base64
import socket
import sys

proto, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")


def line():
    l = f.readline(100000)
    if not l:
        sys.exit(f"{proto}: the server closed the connection")
    return l.rstrip(b"\r\n")


def send(b):
    s.sendall(b + b"\r\n")


def until(pred, what):
    seen = []
    for _ in range(10000):
        l = line()
        seen.append(l)
        if pred(l):
            return seen
    sys.exit(f"{proto}: no {what} in {seen[-5:]}")


plain = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
long_line = b"X" * 20000
answered = 0

if proto == "imap":
    until(lambda l: l.startswith(b"* OK"), "greeting")
    for tag, answer in ((b"p1", b"not base64!"), (b"p2", b"*"), (b"p3", base64.b64encode(b"\0\0\0\0"))):
        send(tag + b" AUTHENTICATE PLAIN")
        until(lambda l: l.startswith(b"+"), "continuation")
        send(answer)
        until(lambda l, t=tag: l.startswith(t + b" BAD") or l.startswith(t + b" NO"), "refusal of a bad SASL response")
        answered += 1
    send(b"a0 LOGIN " + user.encode() + b' "' + password.encode() + b'"')
    until(lambda l: l.startswith(b"a0 OK"), "login")
    send(b"a1 SELECT INBOX")
    until(lambda l: l.startswith(b"a1 OK"), "select")
    junk = [b"", b"*", b"+ x", b"(", b"a2", b"a3 FETCH", b"a4 FETCH 0 FLAGS", b"a5 FETCH *:0 FLAGS",
            b"a6 FETCH 1,,2 FLAGS", b"a7 FETCH 4294967296 FLAGS", b"a8 FETCH 1:* (ENVELOPE)",
            b"a9 FETCH 1:* (BODY[HEADER.FIELDS (SUBJECT",  b"b1 FETCH 1:* ()", b"b2 FETCH 1 (" + b"FLAGS " * 100 + b")",
            b"b3 SEARCH FROM x", b"b4 SEARCH UID", b"b5 UID STORE 1 +FLAGS (\\Seen)", b"b6 LOGIN {5}",
            b'b7 LIST "" "' + b"*a" * 100 + b'b"', b"b8 STATUS INBOX (" + b"MESSAGES " * 200 + b")",
            b"b9 SELECT \"unterminated", b"c1 AUTHENTICATE PLAIN", b"c2 UID", b"c3 NOOP\0x", long_line,
            b"c4 " + b"\xff\xfe" * 100, b'c5 FETCH 1 BODY.PEEK[HEADER.FIELDS ()]', b"c6 EXAMINE inbox",
            b"c7 FETCH 1:* FAST", b"c8 UID FETCH 1:4294967295 UID", b"c9 UID SEARCH UID 1:*"]
    for j in junk:
        send(j)
        tag = j.split(b" ")[0] if j[:1].isalnum() else b"*"
        if j == long_line or b"\0" in j or tag in (b"", b"*", b"+", b"(", b"a2"):
            until(lambda l: l.startswith(b"* BAD") or l.startswith(b"a2 BAD"), "BAD for " + j[:20].decode("latin-1"))
        else:
            until(lambda l, t=tag: l.startswith(t + b" "), "tagged reply for " + j[:20].decode("latin-1"))
        answered += 1
    send(b"z LOGOUT")
    until(lambda l: l.startswith(b"z OK"), "logout")
elif proto == "pop3":
    until(lambda l: l.startswith(b"+OK"), "greeting")
    for j in [b"PASS x", b"AUTH PLAIN !!!!", b"AUTH SCRAM", b"APOP a b", b"RETR 1", long_line, b"\0"]:
        send(j)
        until(lambda l: l.startswith(b"-ERR"), "refusal for " + j[:20].decode("latin-1"))
        answered += 1
    send(b"USER " + user.encode())
    until(lambda l: l.startswith(b"+OK"), "user")
    send(b"PASS " + password.encode())
    until(lambda l: l.startswith(b"+OK"), "pass")
    for j in [b"RETR", b"RETR 0", b"RETR 99999999999999999999", b"RETR -1", b"TOP 1", b"TOP 1 x", b"LIST 1 2 3",
              b"UIDL 0", b"DELE 999", b"USER x", b"XYZZY", b"STAT" + b" " * 5000]:
        send(j)
        until(lambda l: l.startswith(b"-ERR") or l.startswith(b"+OK"), "reply for " + j[:20].decode("latin-1"))
        answered += 1
    send(b"RSET")
    until(lambda l: l.startswith(b"+OK"), "rset")
    send(b"QUIT")
    until(lambda l: l.startswith(b"+OK"), "quit")
elif proto == "nntp":
    until(lambda l: l[:3] in (b"200", b"201"), "greeting")
    send(b"AUTHINFO PASS x")
    until(lambda l: l.startswith(b"482"), "482")
    send(b"AUTHINFO USER " + user.encode())
    until(lambda l: l.startswith(b"381"), "381")
    send(b"AUTHINFO PASS " + password.encode())
    until(lambda l: l.startswith(b"281"), "281")
    for j in [b"ARTICLE", b"NEXT", b"LAST", b"GROUP", b"GROUP no.such", b"ARTICLE <nope>", b"ARTICLE x",
              b"LISTGROUP", b"LIST OVERVIEW.FMT", b'LIST ACTIVE "',
              b"MODE WRITER", b"POST", b"IHAVE <x@y>", b"AUTHINFO SASL PLAIN", b"AUTHINFO USER again",
              long_line, b"\0", b"STAT 4294967296", b"XOVER", b"HEAD 1"]:
        send(j)
        until(lambda l: l[:1] in (b"4", b"5") and l[:3].isdigit(), "4xx/5xx for " + j[:20].decode("latin-1"))
        answered += 1
    send(b"LIST ACTIVE " + b"*a" * 100 + b"b")  # a wildmat that would backtrack exponentially
    until(lambda l: l.startswith(b"215"), "215")
    until(lambda l: l == b".", "end of list")
    send(b"QUIT")
    until(lambda l: l.startswith(b"205"), "205")
elif proto == "sieve":
    until(lambda l: l.startswith(b"OK"), "greeting")
    for j in [b"LISTSCRIPTS", b'AUTHENTICATE "SCRAM-SHA-1"', b'AUTHENTICATE "PLAIN" "!!!"', b'AUTHENTICATE "PLAIN" {12+}',
              b'AUTHENTICATE "PLAIN" "unterminated', long_line, b"\0", b'"', b"XYZZY"]:
        send(j)
        until(lambda l: l.startswith(b"NO"), "NO for " + j[:20].decode("latin-1"))
        answered += 1
    send(b'AUTHENTICATE "PLAIN"')
    until(lambda l: l == b'""', "empty challenge")
    send(b'"*"')
    until(lambda l: l.startswith(b"NO"), "abort")
    send(b'AUTHENTICATE "PLAIN" "' + plain + b'"')
    until(lambda l: l.startswith(b"OK"), "login")
    for j in [b"GETSCRIPT", b'GETSCRIPT "nope"', b'PUTSCRIPT "x" {3+}', b'SETACTIVE "x"', b"NOOP " + b'"' + b"x" * 900 + b'"']:
        send(j)
        until(lambda l: l.startswith(b"NO") or l.startswith(b"OK"), "reply for " + j[:20].decode("latin-1"))
        answered += 1
    send(b"LOGOUT")
    until(lambda l: l.startswith(b"OK"), "logout")
print(f"{proto}: {answered} malformed or hostile commands answered, the session ended normally")
