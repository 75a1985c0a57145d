#!/usr/bin/env python3
"""Writes the man3 pages of the C API from include/mailtls.h.

cbindgen copies every doc comment of the Rust source above its declaration in the
header, so the header is the one place the C API is described; this script turns it
into roff (man(7) macros): one page per function (mailtls_session_read.3, ...) and
the overview mailtls.3 with the conventions, the handles, the callbacks, every
constant and a list of the functions. Run by `make man`:

    scripts/man3.py HEADER OUTDIR VERSION DATE

Markdown-style `code` in the comments becomes bold, a function name a reference
to its page, a parameter of the function italic. The pages are checked with
`groff -man -ww` by tests/install/run.sh.
"""

import os
import re
import sys


def fail(msg):
    sys.exit(f"man3.py: {msg}")


# ---- Reading the header -------------------------------------------------------

def dedent(lines):
    """The text of a comment block, its common indentation removed, blank lines kept."""
    body = [l.rstrip() for l in lines]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    indent = min((len(l) - len(l.lstrip()) for l in body if l.strip()), default=0)
    return [l[indent:] for l in body]


def parse(header):
    """Returns (preamble, items): the file's opening comment and the declarations in
    order, each a dict with kind 'enum', 'opaque', 'callback' or 'function'."""
    lines = header.splitlines()
    items = []
    preamble = []
    i = 0
    doc = None
    n = len(lines)
    while i < n:
        line = lines[i]
        s = line.strip()
        if s == "/*" or (s.startswith("/*") and not s.endswith("*/")):
            block = []
            i += 1
            while i < n and lines[i].strip() != "*/":
                block.append(lines[i])
                i += 1
            i += 1
            if not items and not preamble and block and block[0].lstrip().startswith("*"):
                preamble = dedent([re.sub(r"^\s*\* ?", "", l) for l in block])
            else:
                doc = dedent(block)
            continue
        if doc is not None and s.startswith("enum mailtls_"):
            name = s.split()[1]
            variants = []
            vdoc = []
            i += 1
            while i < n and not lines[i].strip().startswith("};"):
                t = lines[i].strip()
                if t == "/*":
                    block = []
                    i += 1
                    while i < n and lines[i].strip() != "*/":
                        block.append(lines[i])
                        i += 1
                    vdoc = dedent(block)
                else:
                    m = re.match(r"(MAILTLS_[A-Z0-9_]+) = (\d+),", t)
                    if m:
                        variants.append((m.group(1), int(m.group(2)), vdoc))
                        vdoc = []
                i += 1
            items.append({"kind": "enum", "name": name, "doc": doc, "variants": variants})
            doc = None
            i += 1
            continue
        m = re.match(r"typedef struct (mailtls_\w+) \1;", s)
        if doc is not None and m:
            items.append({"kind": "opaque", "name": m.group(1), "doc": doc})
            doc = None
            i += 1
            continue
        if doc is not None and s and not s.startswith("#"):
            decl = [line]
            while not decl[-1].rstrip().endswith(";"):
                i += 1
                decl.append(lines[i])
            text = "\n".join(decl)
            m = re.match(r"typedef .*\(\*(mailtls_\w+)\)\(", text, re.S)
            if m:
                items.append({"kind": "callback", "name": m.group(1), "doc": doc, "decl": decl})
            else:
                m = re.match(r"(.*?\b)(mailtls_\w+)\((.*)\);$", text, re.S)
                if not m:
                    fail(f"cannot read the declaration after a doc comment: {decl[0]!r}")
                params = [p.strip() for p in m.group(3).split(",")]
                names = [] if params == ["void"] else [re.split(r"[ *]", p)[-1] for p in params]
                items.append({"kind": "function", "name": m.group(2), "ret": m.group(1).strip(),
                              "doc": doc, "decl": decl, "params": names})
            doc = None
        i += 1
    return preamble, items


# ---- Writing roff ---------------------------------------------------------------

def esc(text):
    """Escapes text for roff: backslashes, and minus signs that must stay minus signs."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def esc_prose(text):
    return text.replace("\\", "\\e")


class Inline:
    """Turns one line of a doc comment into roff, with the references it makes."""

    def __init__(self, functions, params=()):
        self.functions = functions
        self.params = set(params)
        self.refs = set()

    def __call__(self, line):
        out = []
        for k, part in enumerate(line.split("`")):
            if k % 2 == 0:
                out.append(esc_prose(part))
                continue
            if part in self.functions:
                self.refs.add(part)
                out.append(f"\\fB{esc(part)}\\fP(3)")
            elif part in self.params:
                out.append(f"\\fI{esc(part)}\\fP")
            else:
                out.append("\\fB" + esc(part) + "\\fP")
        text = "".join(out)
        # A line starting with a control character would be read as a request.
        if text.startswith((".", "'")):
            text = "\\&" + text
        return text


def paragraphs(lines, inline):
    """Doc comment lines as roff paragraphs (blank lines separate them), each one
    roff line, so that a `code` span may run across a line break of the comment."""
    paras, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    out = []
    for k, para in enumerate(paras):
        if k:
            out.append(".PP")
        out.append(inline(para))
    return out


def top_level(text):
    """The positions of `text` outside parentheses."""
    depth = 0
    for k, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            yield k


def summary(doc, limit=90):
    """The first sentence of a doc comment, shortened for the NAME line and the lists:
    parentheses dropped, then cut at a colon, semicolon or comma, when it is long."""
    text = " ".join(l.strip() for l in doc if l.strip())
    m = re.match(r"(.+?[^.\s][.!?])(\s+[A-Z(`]|$)", text)
    sentence = (m.group(1) if m else text).replace("`", "").rstrip(".").strip()
    if len(sentence) > limit:
        sentence = re.sub(r" \([^()]*\)", "", sentence)
    if len(sentence) > limit:
        outside = set(top_level(sentence))
        for most in (limit, limit + 40):
            cuts = [k for k in outside for stop in (": ", "; ", ", ")
                    if sentence.startswith(stop, k) and 35 <= k <= most]
            if cuts:
                sentence = sentence[:min(cuts)]
                break
    first = sentence.split(" ", 1)[0]
    if len(first) > 1 and first.isupper():  # an acronym: TLS, EHLO
        return sentence
    return sentence[:1].lower() + sentence[1:]


def synopsis(decl, params):
    """The declaration as cbindgen wrapped it: types bold, parameter names italic."""
    out = []
    for line in decl:
        pieces = re.split(r"(\w+)(?=[,)])", line.rstrip())
        text = ""
        for k, piece in enumerate(pieces):
            if k % 2 == 1 and piece in params:
                text += f"\\fI{esc(piece)}\\fB"
            else:
                text += esc(piece)
        out.append(f"\\fB{text}\\fP")
    return out


def th(name, section, version, date):
    return [
        ".\\\" Generated by scripts/man3.py from include/mailtls.h: do not edit.",
        f'.TH {name.upper()} {section} {date} "mailtls {version}" "mailtls manual"',
        # Identifiers are long: no hyphenation, ragged right.
        ".nh",
        ".ad l",
    ]


LIBRARY = [
    ".SH LIBRARY",
    "mailtls (\\fIlibmailtls\\fP, \\fB\\-lmailtls\\fP; \\fBpkg\\-config \\-\\-cflags \\-\\-libs mailtls\\fP)",
]

RESULT = [
    ".SH RETURN VALUE",
    "\\fBMAILTLS_RESULT_OK\\fP (0) on success; on failure another \\fBmailtls_result\\fP",
    "code, and the outputs are left as they were.",
    "\\fBmailtls_result_str\\fP(3) and \\fBmailtls_result_name\\fP(3) describe a code;",
    "\\fBmailtls\\fP(3) lists them all.",
]


def function_page(f, functions, version, date):
    inline = Inline(functions, f["params"])
    body = paragraphs(f["doc"], inline)
    out = th(f["name"], 3, version, date)
    out += [".SH NAME", f"{esc(f['name'])} \\- {esc_prose(summary(f['doc']))}"]
    out += LIBRARY
    out += [".SH SYNOPSIS", ".nf", "\\fB#include <mailtls.h>\\fP", ".PP"]
    out += synopsis(f["decl"], f["params"])
    out += [".fi", ".SH DESCRIPTION"] + body
    if f["ret"] == "mailtls_result":
        out += RESULT
        inline.refs.update({"mailtls_result_str", "mailtls_result_name"})
    refs = sorted(r for r in inline.refs if r != f["name"])
    see = ["\\fBmailtls\\fP(3)"] + [f"\\fB{esc(r)}\\fP(3)" for r in refs]
    out += [".SH SEE ALSO", ",\n".join(see)]
    return "\n".join(out) + "\n"


GROUPS = [
    ("General", ""),
    ("Config builders", "mailtls_config_builder_"),
    ("Configs", "mailtls_config_"),
    ("Intolerance memory", "mailtls_memory_"),
    ("Client sessions", "mailtls_client_"),
    ("Server sessions", "mailtls_server_"),
    ("Sessions", "mailtls_session_"),
    ("Reports", "mailtls_report_"),
]


def group_of(name):
    best = ""
    for _, prefix in GROUPS:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return best


INTRO = """mailtls is a library with a C ABI, written in Rust on rustls, that gives mail and
news software the STARTTLS negotiation (RFC 3207 and its kin for LMTP, IMAP, POP3,
NNTP and ManageSieve) and implicit TLS (RFC 8314), client and server side. The
application keeps its own sockets, event loop and protocol engine; the library runs
the negotiation with the plaintext-injection checks, the client policies
(\\fBnone\\fP, \\fBmay\\fP, \\fBencrypt\\fP, \\fBverify\\fP), the automatic recovery
from TLS-intolerant servers (the fallback ladder and the intolerance memory), and
ends each negotiation in one report of what happened."""

FLOW = """A client builds a config once
(\\fBmailtls_config_builder_new\\fP(3), the setters,
\\fBmailtls_config_builder_build\\fP(3)), makes a session per connection
(\\fBmailtls_client_new\\fP(3)), gives it the connection
(\\fBmailtls_session_set_fd\\fP(3) or \\fBmailtls_session_set_io\\fP(3)), calls
\\fBmailtls_client_negotiate\\fP(3), reads \\fBmailtls_session_report\\fP(3), and
then speaks its protocol through \\fBmailtls_session_read\\fP(3) and
\\fBmailtls_session_write\\fP(3). A server calls
\\fBmailtls_server_offer_starttls\\fP(3) when it lists its capabilities,
\\fBmailtls_server_check_command\\fP(3) for every command, and
\\fBmailtls_server_starttls\\fP(3) when STARTTLS arrives."""


def overview_page(preamble, items, functions, version, date):
    inline = Inline(functions)
    out = th("mailtls", 3, version, date)
    out += [".SH NAME", "mailtls \\- safe, self\\-recovering STARTTLS and implicit TLS for C mail and news software"]
    out += LIBRARY
    out += [".SH SYNOPSIS", ".nf", "\\fB#include <mailtls.h>\\fP", ".PP",
            "\\fBcc prog.c $(pkg\\-config \\-\\-cflags \\-\\-libs mailtls)\\fP",
            "\\fBcc prog.c $(pkg\\-config \\-\\-static \\-\\-cflags \\-\\-libs mailtls)\\fP",
            ".fi"]
    out += [".SH DESCRIPTION", INTRO, ".PP", FLOW]
    conventions = [l for l in preamble if l.strip()]
    # The preamble's first paragraph is the title; the one naming the generator is
    # for the header's readers only.
    paras, cur = [], []
    for l in preamble + [""]:
        if l.strip():
            cur.append(l)
        elif cur:
            paras.append(cur)
            cur = []
    kept = [p for p in paras[1:] if not any("cbindgen" in l for l in p)]
    if conventions and kept:
        out += [".SS Conventions"]
        for k, p in enumerate(kept):
            if k:
                out.append(".PP")
            p = [l.strip() for l in p]
            if p[0].startswith("Conventions: "):
                rest = p[0][len("Conventions: "):]
                p[0] = rest[:1].upper() + rest[1:]
            out += [inline(l) for l in p]
    out += [".SS Versions",
            "The header defines \\fBMAILTLS_VERSION_MAJOR\\fP, \\fBMAILTLS_VERSION_MINOR\\fP,",
            "\\fBMAILTLS_VERSION_PATCH\\fP and \\fBMAILTLS_VERSION_STRING\\fP (here",
            f"\\fB{esc(version)}\\fP); \\fBmailtls_version\\fP(3) gives the library's version at run",
            "time. The shared library's soname is \\fBlibmailtls.so.0\\fP; every function is",
            "exported under a symbol version (\\fBMAILTLS_0\\fP for those of the first",
            "release, a new node for each release that adds functions)."]
    out += [".SH HANDLES"]
    for it in items:
        if it["kind"] == "opaque":
            out += [".TP", f"\\fB{esc(it['name'])}\\fP"] + paragraphs(it["doc"], inline)
    out += [".SH FUNCTIONS",
            "Each function has its own page. By object:"]
    for title, prefix in GROUPS:
        names = [it for it in items if it["kind"] == "function" and group_of(it["name"]) == prefix]
        if not names:
            continue
        out += [f".SS {title}"]
        for it in names:
            inline.refs.add(it["name"])
            out += [".TP", f"\\fB{esc(it['name'])}\\fP(3)", esc_prose(summary(it["doc"]))]
    out += [".SH CALLBACKS"]
    for it in items:
        if it["kind"] == "callback":
            params = re.findall(r"(\w+)(?=[,)])", "".join(it["decl"]))
            cb = Inline(functions, params)
            out += [".SS " + esc(it["name"]), ".nf"] + synopsis(it["decl"], params) + [".fi", ".PP"]
            out += paragraphs(it["doc"], cb)
            inline.refs |= cb.refs
    out += [".SH CONSTANTS",
            "Each enumeration is also a typedef of \\fBuint32_t\\fP in C before C23; the",
            "numbers are stable and never reused."]
    for it in items:
        if it["kind"] != "enum":
            continue
        out += [f".SS {esc(it['name'])}"] + paragraphs(it["doc"], inline)
        for vname, value, vdoc in it["variants"]:
            out += [".TP", f"\\fB{esc(vname)}\\fP ({value})"] + (paragraphs(vdoc, inline) or ["(undocumented)"])
    out += [".SH SEE ALSO",
            "\\fBmailtls\\-client\\fP(1), \\fBmailtls\\-server\\fP(1), \\fBpkg\\-config\\fP(1)"]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 5:
        fail("usage: man3.py HEADER OUTDIR VERSION DATE")
    header_path, outdir, version, date = sys.argv[1:]
    with open(header_path, encoding="utf-8") as f:
        preamble, items = parse(f.read())
    functions = {it["name"] for it in items if it["kind"] == "function"}
    if not functions:
        fail(f"no function found in {header_path}")
    os.makedirs(outdir, exist_ok=True)
    pages = {"mailtls": overview_page(preamble, items, functions, version, date)}
    for it in items:
        if it["kind"] == "function":
            pages[it["name"]] = function_page(it, functions, version, date)
    for name, text in pages.items():
        with open(os.path.join(outdir, name + ".3"), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"man3.py: {len(pages) - 1} function pages and mailtls.3 in {outdir}")


if __name__ == "__main__":
    main()
