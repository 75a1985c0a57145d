#!/usr/bin/env python3
"""Turns the JSON lines of bench-c and mailtls-bench (one run) into the table of
BENCHMARKS.md and a bar chart of the ratios (SVG).

    report.py RESULTS.jsonl TABLE.md CHART.svg
"""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]


def get(what, impl, cert):
    for r in rows:
        if r["what"] == what and r["impl"] == impl and r["cert"] in (cert, "-"):
            return r["median"]
    return None


def ratio(a, b):
    return a / b if a and b else None


lines = []
bars = []  # (label, ratio, goal)
for cert in ("ecdsa", "rsa"):
    if get("sessions", "openssl", cert) is None:
        continue
    name = "ECDSA P-256" if cert == "ecdsa" else "RSA-2048"
    lines.append(f"| **{name}** | | | | |")
    for what, title in (("sessions", "full handshakes/s"), ("resumed", "resumed sessions/s")):
        for impl, label in (("mailtls-pq", "mailtls, X25519MLKEM768 (default)"), ("mailtls-x25519", "mailtls, X25519"),
                            ("openssl", "OpenSSL 3, X25519"), ("rustls-pq", "bare rustls, X25519MLKEM768"),
                            ("rustls-x25519", "bare rustls, X25519")):
            v = get(what, impl, cert)
            if v is None:
                continue
            o = get(what, "openssl", cert)
            bare = get(what, "rustls-" + impl.split("-")[1], cert) if impl.startswith("mailtls") else None
            floor = get("floor", "rustls-" + impl.split("-")[1], cert) if "-" in impl else None
            lines.append(f"| {title}: {label} | {v:,.0f} | {ratio(v, o) or 0:.2f}x | "
                         f"{'%.2fx' % ratio(v, bare) if bare else '-'} | "
                         f"{'%.0f%%' % (100 * v / floor) if floor and what == 'sessions' else '-'} |")
        if what == "sessions":
            for impl in ("pq", "x25519"):
                f = get("floor", "rustls-" + impl, cert)
                lines.append(f"| crypto floor, {'hybrid' if impl == 'pq' else 'X25519'} key exchange | {f:,.0f} | | | 100% |")
        mp, mx, o = get(what, "mailtls-pq", cert), get(what, "mailtls-x25519", cert), get(what, "openssl", cert)
        bp, bx = get(what, "rustls-pq", cert), get(what, "rustls-x25519", cert)
        tag = "full" if what == "sessions" else "resumed"
        if mx and o:
            bars.append((f"{name} {tag}: mailtls X25519 / OpenSSL", mx / o, 2.5 if what == "sessions" else None))
        if mp and o:
            bars.append((f"{name} {tag}: mailtls PQ / OpenSSL", mp / o, 1.5 if what == "sessions" else None))
        if mp and bp:
            bars.append((f"{name} {tag}: mailtls PQ / bare rustls", mp / bp, 0.9))
        if mx and bx:
            bars.append((f"{name} {tag}: mailtls X25519 / bare rustls", mx / bx, 0.9))

b_m, b_o, b_r = get("bulk", "mailtls-pq", "ecdsa"), get("bulk", "openssl", "ecdsa"), get("bulk", "rustls", "ecdsa")
lines.append("| **bulk, 64 MiB message body** | | | | |")
for v, label in ((b_m, "mailtls (callback path)"), (b_o, "OpenSSL 3"), (b_r, "bare rustls")):
    if v:
        lines.append(f"| {label}, MB/s | {v:,.0f} | {ratio(v, b_o) or 0:.2f}x | {'%.2fx' % ratio(v, b_r) if b_r else '-'} | |")
if b_m and b_r:
    bars.append(("bulk: mailtls / bare rustls", b_m / b_r, 0.95))
lines.append("| **heap per idle established session** | | | | |")
for side in ("client", "server"):
    m, o = get("memory-" + side, "mailtls-pq", "ecdsa"), get("memory-" + side, "openssl", "ecdsa")
    if m and o:
        lines.append(f"| {side} side: mailtls / OpenSSL, bytes | {m:,.0f} / {o:,.0f} | {m / o:.2f}x | | |")
        bars.append((f"memory {side}: OpenSSL / mailtls", o / m, 2.0))
n_entries = get("memory-entries", "mailtls", "-") or 1_000_000
lines.append("| **intolerance memory** | | | | |")
for what, label, fmt in (("memory-lookups-1t", "lookups/s, 1 thread, any of the entries", ",.0f"),
                         ("memory-lookups-2t", "lookups/s, 2 threads, any of the entries", ",.0f"),
                         ("memory-lookups-hot", "lookups/s, 1 thread, among 10,000 of them", ",.0f"),
                         ("memory-updates", "updates/s, 1 thread", ",.0f"),
                         ("memory-bytes", f"bytes per entry ({n_entries:,.0f} entries)", ".1f")):
    v = get(what, "mailtls", "-")
    if v is not None:
        lines.append(f"| {label} | {v:{fmt}} | | | |")
lines.append("| **recovery cost (against mailtls-zoo on loopback)** | | | | |")
for case, label in (("tolerant", "tolerant server"), ("intolerant-first", "intolerant server (resets hellos over 1000 bytes), first contact"),
                    ("intolerant-next", "the same server, next contact (memory)")):
    c, rt = get(f"recovery-{case}-connections", "mailtls-pq", "ecdsa"), get(f"recovery-{case}-round-trips", "mailtls-pq", "ecdsa")
    bc, brt = get(f"recovery-{case}-connections", "rustls", "ecdsa"), get(f"recovery-{case}-round-trips", "rustls", "ecdsa")
    if c is not None:
        bare = f"{bc:.0f} / {brt:.0f}" if bc is not None else "-"
        lines.append(f"| {label}: connections / round trips | {c:.0f} / {rt:.0f} | | {bare} | |")

# The goals that are not ratios of two speeds.
goals = []
v = get("memory-lookups-1t", "mailtls", "-")
if v is not None:
    goals.append((f"memory lookups/s, 1 thread, {n_entries:,.0f} entries: {v:,.0f}", v >= 5e6, ">= 5,000,000"))
v = get("memory-bytes", "mailtls", "-")
if v is not None:
    goals.append((f"memory bytes per entry: {v:.1f}", v <= 256, "<= 256"))
m, b = get("recovery-tolerant-round-trips", "mailtls-pq", "ecdsa"), get("recovery-tolerant-round-trips", "rustls", "ecdsa")
mc, bc = get("recovery-tolerant-connections", "mailtls-pq", "ecdsa"), get("recovery-tolerant-connections", "rustls", "ecdsa")
if m is not None and b is not None:
    goals.append((f"extra round trips to a tolerant server: {m - b:.0f} (connections {mc - bc:.0f})", m == b and mc == bc, "0"))

# The memory at fleet scale (bench/fleet.rs): the database against the text file it
# replaced, measured in the same run, and the goals of issue 15.
fleet = []
n_fleet = get("fleet-entries", "mailtls", "-")
if n_fleet is not None:
    def pair(what):
        return get(what, "db", "-"), get(what, "text", "-")

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    fleet += ["", f"### The memory at fleet scale: {n_fleet:,.0f} peers", "",
              "| figure | database | text file | database vs text file |", "| --- | --- | --- | --- |"]
    for what, label, fmt, lower_is_better in (
            ("fleet-update", "one update (`record_success`), median, µs", ",.1f", True),
            ("fleet-lookups-1t", "lookups/s, 1 thread, any of the peers", ",.0f", False),
            ("fleet-lookups-2t", "lookups/s per thread, 2 threads, any of the peers", ",.0f", False),
            ("fleet-lookups-hot", "lookups/s, 1 thread, among 10,000 of them", ",.0f", False),
            ("fleet-open", "open + first lookup in a fresh process, median of 5, ms", ",.2f", True)):
        d, t = pair(what)
        if d is None:
            continue
        r = (t / d if lower_is_better else d / t) if d and t else None
        fleet.append(f"| {label} | {num(d, fmt)} | {num(t, fmt)} | {num(r, ',.0f' if r and r >= 10 else '.2f')}x {'faster' if lower_is_better else 'as many'} |")
    v = get("fleet-import", "db", "-")
    if v is not None:
        fleet.append(f"| filling the database: `import_text` of {n_fleet:,.0f} peers, one transaction, ms | {v:,.0f} | | |")
    fn, fd = get("fleet-sessions", "none", "-"), get("fleet-sessions", "db", "-")
    w, per = get("fleet-workers", "db", "-"), get("fleet-per-worker", "db", "-")
    lost = get("fleet-lost", "db", "-")
    if fn and fd:
        fleet += ["", f"| fleet: {w:.0f} processes x {per:,.0f} sessions, one server | sessions/s | | |", "| --- | --- | --- | --- |",
                  f"| no memory | {fn:,.0f} | | |",
                  f"| shared database of {n_fleet:,.0f} peers | {fd:,.0f} | {fd / fn:.2f}x of no memory | |",
                  f"| records lost (of {w * per:,.0f} new, and the {n_fleet:,.0f} there before) | {lost:.0f} | | |"]
        bars.append(("fleet: sessions/s with the database / without", fd / fn, 0.9))
    sizes = sorted({int(r["what"].rsplit("-", 1)[1]) for r in rows if r["what"].startswith("fleet-deliver-") and r["what"][-1].isdigit()})
    if sizes:
        c_row = any(r["impl"] == "db-c" for r in rows if r["what"].startswith("fleet-deliver-"))
        def fastest(what, impl):
            for r in rows:
                if r["what"] == what and r["impl"] == impl:
                    return min(r["runs"])
            return None

        def cell(what, impl):
            m, f = get(what, impl, "-"), fastest(what, impl)
            return "-" if m is None else f"{m:,.1f} ({f:,.1f})"

        fleet += ["", "One delivery by a fresh process (open the memory, STARTTLS, record, QUIT, exit), ms, median (fastest):", "",
                  "| peers in the memory | text file (before) | database (after) | C `mailtls-client --memory`, database |",
                  "| --- | --- | --- | --- |"]
        if get("fleet-deliver-none", "none", "-") is not None:
            fleet.append(f"| no memory at all | {cell('fleet-deliver-none', 'none')} | | |")
        for n in sizes:
            t, d, c = (cell(f"fleet-deliver-{n}", k) for k in ("text", "db", "db-c"))
            fleet.append(f"| {n:,} | {t} | {d} | {c if c_row else 'not built'} |")
    d = get("fleet-update", "db", "-")
    if d is not None:
        goals.append((f"memory database, one update at {n_fleet:,.0f} peers: {d:,.1f} µs (text file: {get('fleet-update', 'text', '-'):,.0f} µs)", d <= 50, "<= 50 µs"))
    for t in (1, 2):
        d = get(f"fleet-lookups-{t}t", "db", "-")
        if d is not None:
            goals.append((f"memory database, lookups/s per thread, {t} thread{'s' if t > 1 else ''}: {d:,.0f}", d >= 2e6, ">= 2,000,000"))
    d = get("fleet-open", "db", "-")
    if d is not None:
        goals.append((f"memory database, open in a fresh process: {d:,.2f} ms", d <= 10, "<= 10 ms"))
    if fn and fd:  # (the sessions/s ratio is a bar of the chart, with its goal)
        goals.append((f"fleet: records lost: {lost:.0f}", lost == 0, "0"))

header = ["| figure | value | vs OpenSSL | vs bare rustls | of crypto floor |", "| --- | --- | --- | --- | --- |"]
open(sys.argv[2], "w").write("\n".join(header + lines + fleet) + "\n")

# The chart: one bar per ratio, the goal as a tick.
W, bar_h, gap, left = 900, 18, 8, 330
top = 40
H = top + len(bars) * (bar_h + gap) + 30
scale = (W - left - 40) / max([4.0] + [b[1] for b in bars] + [b[2] or 0 for b in bars])
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="10" y="20" font-size="14" font-weight="bold">mailtls ratios (bars), goals (red ticks); 1.0 = parity</text>',
       f'<line x1="{left + scale:.1f}" y1="{top - 5}" x2="{left + scale:.1f}" y2="{H - 25}" stroke="#999" stroke-dasharray="4"/>']
for i, (label, v, goal) in enumerate(bars):
    y = top + i * (bar_h + gap)
    met = goal is None or v >= goal
    svg.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{v * scale:.1f}" height="{bar_h}" fill="{"#3a7" if met else "#d84"}"/>')
    svg.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 13}">{v:.2f}x</text>')
    if goal:
        gx = left + goal * scale
        svg.append(f'<line x1="{gx:.1f}" y1="{y - 2}" x2="{gx:.1f}" y2="{y + bar_h + 2}" stroke="red" stroke-width="2"/>')
svg.append("</svg>")
open(sys.argv[3], "w").write("\n".join(svg) + "\n")
for label, v, goal in bars:
    print(f"{label:50s} {v:6.2f}x" + (f"  goal {goal}x {'met' if v >= goal else 'MISSED'}" if goal else ""))
for label, met, goal in goals:
    print(f"{label:57s} goal {goal} {'met' if met else 'MISSED'}")
