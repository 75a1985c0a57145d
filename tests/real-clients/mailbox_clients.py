#!/usr/bin/env python3
"""Python's imaplib, poplib and nntplib against mailtls-server (issue 5).

    mailbox_clients.py PROTO MODE PORT CAFILE USER PASS

PROTO is imap, pop3 or nntp; MODE starttls or implicit. The client verifies the
server's certificate against CAFILE for the name "localhost", logs in and reads what
the server holds. Prints one line: the TLS version, then what was read
("TLSv1.3 2 messages, subject 'real client 1'"). Exits non-zero on any failure.
"""
import ssl
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import imaplib  # noqa: E402
import nntplib  # noqa: E402
import poplib  # noqa: E402

proto, mode, port, cafile, user, password = sys.argv[1:7]
port = int(port)
ctx = ssl.create_default_context(cafile=cafile)
host = "localhost"
implicit = mode == "implicit"


def subject_of(raw):
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode("ascii", "replace")
    return "(none)"


if proto == "imap":
    if implicit:
        m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=20)
    else:
        m = imaplib.IMAP4(host, port, timeout=20)
        assert "STARTTLS" in m.capabilities, m.capabilities
        m.starttls(ssl_context=ctx)
        assert "STARTTLS" not in m.capabilities, "STARTTLS advertised again after TLS"
    version = m.sock.version()
    m.login(user, password)
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    count = int(data[0])
    typ, data = m.search(None, "ALL")
    nums = data[0].split()
    assert len(nums) == count, (nums, count)
    typ, data = m.fetch(nums[-1], "(RFC822)")
    subject = subject_of(data[0][1])
    m.close()
    m.logout()
    print(f"{version} {count} messages, subject '{subject}'")
elif proto == "pop3":
    if implicit:
        p = poplib.POP3_SSL(host, port, context=ctx, timeout=20)
    else:
        p = poplib.POP3(host, port, timeout=20)
        assert "STLS" in p.capa()
        p.stls(context=ctx)
        assert "STLS" not in p.capa(), "STLS advertised again after TLS"
    version = p.sock.version()
    p.user(user)
    p.pass_(password)
    count, octets = p.stat()
    resp, lines, _ = p.retr(count)
    subject = subject_of(b"\r\n".join(lines))
    uidl = p.uidl()[1]
    assert len(uidl) == count
    p.quit()
    print(f"{version} {count} messages ({octets} octets), subject '{subject}'")
elif proto == "nntp":
    if implicit:
        n = nntplib.NNTP_SSL(host, port, ssl_context=ctx, timeout=20, readermode=False)
    else:
        n = nntplib.NNTP(host, port, timeout=20, readermode=False)
        assert "STARTTLS" in n.getcapabilities()
        n.starttls(context=ctx)
        assert "STARTTLS" not in n.getcapabilities(), "STARTTLS advertised again after TLS"
    version = n.sock.version()
    n.login(user, password, usenetrc=False)
    resp, groups = n.list()
    names = sorted(g.group for g in groups)
    resp, count, first, last, name = n.group(names[-1])
    resp, info = n.article(str(last))
    subject = subject_of(b"\r\n".join(info.lines))
    n.quit()
    print(f"{version} {len(names)} groups, {name} {count} articles, subject '{subject}'")
else:
    sys.exit(f"unknown protocol {proto}")
