#!/usr/bin/env python3
"""Writes the man1 page of an example tool from its --help text.

    scripts/man1.py PROGRAM OUTDIR VERSION DATE

PROGRAM is the built binary (build/bin/mailtls-client); its --help output gives the
SYNOPSIS (the `usage:` block), OPTIONS (lines starting with `  -`, continued by
deeper-indented lines) and EXIT STATUS (an `exit:` line). The NAME line and the
opening paragraphs are the ones below, per tool. Anything in the help this script
does not recognise is kept, as written, in DESCRIPTION, so a change to a tool's help
still gives a whole page. Our own script rather than help2man: the tools have no
--version, help2man would add perl to the dependencies, and its guesses about a
help layout that is not GNU's would need an include file per tool anyway.
"""

import os
import re
import subprocess
import sys

TOOLS = {
    "mailtls-client": (
        "negotiate STARTTLS or implicit TLS with a mail or news server, and deliver or read",
        [
            "\\fBmailtls\\-client\\fR connects to \\fIHOST\\fR, negotiates TLS through the "
            "mailtls library (\\fBmailtls\\fR(3)) under the chosen policy, and prints a summary "
            "of the negotiation on standard error and, with \\fB\\-\\-json\\fR, the library's "
            "report as one JSON line on standard output. With \\fB\\-\\-message\\fR it delivers "
            "a message over SMTP or LMTP; with \\fB\\-\\-user\\fR and \\fB\\-\\-pass\\fR it logs "
            "in to an IMAP, POP3, NNTP or ManageSieve server and lists what it holds.",
            "It gives the library a connector, so the fallback ladder retries a TLS-intolerant "
            "server on new connections by itself; \\fB\\-\\-memory\\fR keeps what was learnt "
            "(the intolerance memory) in a database file shared by every run and process, "
            "which \\fB\\-\\-list\\-memory\\fR, \\fB\\-\\-forget\\fR, \\fB\\-\\-export\\-memory\\fR "
            "and \\fB\\-\\-import\\-memory\\fR inspect and change.",
        ],
    ),
    "mailtls-server": (
        "a small SMTP, LMTP, IMAP, POP3, NNTP and ManageSieve server on the mailtls library",
        [
            "\\fBmailtls\\-server\\fR listens on one address and speaks one protocol, offering "
            "STARTTLS (or, with \\fB\\-\\-implicit\\fR, TLS from the first byte) through the "
            "mailtls library (\\fBmailtls\\fR(3)): SMTP and LMTP deliver into a maildir, IMAP "
            "and POP3 serve that maildir, NNTP a news spool and ManageSieve a script store. It "
            "is the library's example server, for tests and demonstrations: one account, no "
            "queue, no relaying.",
            "Without \\fB\\-\\-cert\\fR it generates a self-signed certificate for its host name "
            "and says so. With \\fB\\-\\-listen 127.0.0.1:0\\fR it prints "
            "\\fB{\"listening\":\"127.0.0.1:\\fR\\fIPORT\\fR\\fB\"}\\fR as its first line.",
        ],
    ),
    "mailtls-tlsrpt": (
        "write the TLS-RPT (RFC 8460) report of a directory of session records",
        [
            "\\fBmailtls\\-tlsrpt\\fR adds up the TLS-RPT results that an MTA built on the mailtls "
            "library (\\fBmailtls\\fR(3)) recorded, one line per delivery attempt, with "
            "\\fBmailtls_report_tlsrpt_record\\fR(3), in files named \\fI*.tlsrpt\\fR in "
            "\\fIDIR\\fR, and writes the aggregate report of RFC 8460 section 4.4: per policy, "
            "the sessions that succeeded and failed, and each kind of failure with its count. "
            "Run once a day, it reports the previous UTC day, as section 4.1 asks.",
            "It sends nothing: the report is for the reporting domain's TLSRPT address, by mail "
            "or HTTPS (RFC 8460 section 3), gzip-compressed or not, which is the caller's part. "
            "A report covers every policy domain in \\fIDIR\\fR; to send each domain only its "
            "own sessions, keep one directory per domain.",
        ],
    ),
}


def fail(msg):
    sys.exit(f"man1.py: {msg}")


def esc(text):
    """Escapes help text: backslashes, and the dashes that start an option."""
    text = text.replace("\\", "\\e")
    return re.sub(r"(^|[\s(/\[|,])(-{1,2})(?=[\w])", lambda m: m.group(1) + m.group(2).replace("-", "\\-"), text)


def line(text):
    return "\\&" + text if text.startswith((".", "'")) else text


def option_tag(tag):
    """`--memory FILE`: the option bold, its argument italic."""
    out = []
    for word in tag.split(" "):
        if word.startswith("-"):
            out.append("\\fB" + word.replace("\\", "\\e").replace("-", "\\-") + "\\fR")
        else:
            out.append("\\fI" + esc(word) + "\\fR")
    return " ".join(out)


def split_option(raw):
    """An option line: (tag, description) split where the description column starts."""
    body = raw[2:]
    two = body.find("  ")
    col = 14  # the description column (16) less the two-space indent
    if len(body) > col and body[col - 1] == " " and body[col] != " " and (two < 0 or two >= col - 1):
        if two < 0 or two > col - 1:
            return body[:col].strip(), body[col:].strip()
    if two < 0:
        return body.strip(), ""
    return body[:two].strip(), body[two:].strip()


def parse(help_text, prog):
    usage, options, exits, other = [], [], [], []
    lines = help_text.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i]
        if raw.startswith("usage: "):
            form = raw[len("usage: "):].strip()
            i += 1
            while i < len(lines) and lines[i].startswith(" ") and lines[i].strip():
                s = lines[i].strip()
                if s.startswith(prog + " ") or s == prog:
                    usage.append(form)
                    form = s
                else:
                    form += "\n" + s
                i += 1
            usage.append(form)
            continue
        if re.match(r"  -", raw):
            tag, desc = split_option(raw)
            i += 1
            while i < len(lines) and re.match(r"    +\S", lines[i]):
                desc += " " + lines[i].strip()
                i += 1
            options.append((tag, desc.strip()))
            continue
        if raw.startswith("exit:"):
            text = raw[len("exit:"):].strip()
            i += 1
            while i < len(lines) and re.match(r"    +\S", lines[i]):
                text += " " + lines[i].strip()
                i += 1
            for part in text.split(", "):
                code, _, meaning = part.partition(" ")
                exits.append((code, meaning))
            continue
        if raw.strip():
            other.append(raw)
        i += 1
    return usage, options, exits, other


def page(prog, help_text, version, date):
    name_line, description = TOOLS.get(prog, ("an example program of the mailtls library", []))
    usage, options, exits, other = parse(help_text, prog)
    if not usage or not options:
        fail(f"{prog} --help gave no usage block or no option: nothing to write a page from")
    out = [
        f".\\\" Generated by scripts/man1.py from {prog} --help: do not edit.",
        f'.TH {prog.upper()} 1 {date} "mailtls {version}" "User Commands"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{esc(prog)} \\- {name_line}",
        ".SH SYNOPSIS",
    ]
    out.append(".nf")
    pad = " " * (len(prog) + 1)
    for k, form in enumerate(usage):
        rest = form[len(prog):].strip() if form.startswith(prog) else form
        parts = rest.split("\n")
        out.append(f"\\fB{esc(prog)}\\fR " + esc(parts[0]))
        out += [pad + esc(p) for p in parts[1:]]
    out.append(".fi")
    out.append(".SH DESCRIPTION")
    for k, para in enumerate(description):
        if k:
            out.append(".PP")
        out.append(para)
    if other:
        out += [".PP", ".nf"] + [line(esc(l)) for l in other] + [".fi"]
    out.append(".SH OPTIONS")
    for tag, desc in options:
        out += [".TP", option_tag(tag), line(esc(desc))]
    if exits:
        out.append(".SH EXIT STATUS")
        for code, meaning in exits:
            out += [".TP", f"\\fB{esc(code)}\\fR", line(esc(meaning[:1].upper() + meaning[1:]))]
    others = sorted(t for t in TOOLS if t != prog)
    out += [".SH SEE ALSO", ", ".join(["\\fBmailtls\\fR(3)"] + [f"\\fB{esc(t)}\\fR(1)" for t in others])]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 5:
        fail("usage: man1.py PROGRAM OUTDIR VERSION DATE")
    binary, outdir, version, date = sys.argv[1:]
    prog = os.path.basename(binary)
    run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    help_text = run.stdout or run.stderr
    if run.returncode != 0:
        fail(f"{binary} --help exited {run.returncode}")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, prog + ".1"), "w", encoding="utf-8") as f:
        f.write(page(prog, help_text, version, date))
    print(f"man1.py: {outdir}/{prog}.1")


if __name__ == "__main__":
    main()
