#!/usr/bin/env python3
"""Writes bench/RESULTS-heap.md from one `APP_HEAPTRACK=1 bench/apptraffic.sh` step (stdout):
what was still allocated in an idle shopchat after a load, read from heaptrack_print's leak
report of a process killed with SIGKILL (nothing was freed at exit, so "leaked" is "live").

    python3 bench/heap_report.py HEAP.txt STATUS COMMIT USERS IDLE_SECONDS CONNECTIONS

HEAP.txt: `heaptrack_print --print-leaks=1 …`; STATUS: the VmRSS/RssAnon/RssFile/VmHWM lines
of /proc/PID/status read just before the kill.
"""

import re
import sys
import time

# Frames that say how memory is allocated, not who holds it.
PLUMBING = ("alloc::", "<alloc::", "core::", "<core::", "std::", "<std::", "hashbrown::",
            "<hashbrown::", "__rust", "__libc", "malloc", "realloc", "calloc", "0x",
            "_start", "main", "clone", "start_thread")

# heaptrack_print's sizes: 1024-based, one letter.
UNITS = {"B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def size_bytes(text):
    m = re.fullmatch(r"([\d.]+)([BKMG])", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else 0.0


def mb(n_bytes):
    return f"{n_bytes / 1024 / 1024:.1f}"


def parse_leaks(text):
    """The merged leak entries: size, calls and the frames of their largest backtrace."""
    entries = []
    section = text.split("MEMORY LEAKS", 1)[-1].split("\ntotal runtime", 1)[0]
    for block in re.split(r"\n\s*\n", section):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        head = re.match(r"([\d.]+[BKMG]) leaked over (\d+) calls from$", lines[0])
        if not head:
            continue
        # Frames: function lines are those not starting with "at " / "in " once stripped.
        frames, sub_started = [], False
        for line in lines[1:]:
            stripped = line.strip()
            if re.match(r"[\d.]+[BKMG] leaked over \d+ calls from:$", stripped):
                if sub_started:
                    break  # only the first (largest) backtrace
                sub_started = True
                continue
            if stripped.startswith(("at ", "in ")):
                continue
            frames.append(stripped)
        entries.append({"bytes": size_bytes(head.group(1)), "shown": head.group(1),
                        "calls": int(head.group(2)), "frames": frames})
    entries.sort(key=lambda e: -e["bytes"])
    return entries


# Rust's legacy symbol mangling, as left by heaptrack's C++ demangler: `$LT$` for `<`, `..` for
# `::` and so on, then a `::h<16 hex>` hash.
LEGACY_ESCAPES = {"$LT$": "<", "$GT$": ">", "$C$": ",", "$LP$": "(", "$RP$": ")", "$RF$": "&",
                  "$BP$": "*", "$SP$": "@", "$u20$": " ", "$u27$": "'", "$u5b$": "[",
                  "$u5d$": "]", "$u7b$": "{", "$u7d$": "}", "$u7e$": "~"}


def demangle(frame):
    """A readable Rust path from a legacy-mangled one (plain C++ and v0 symbols pass through)."""
    frame = re.sub(r"::h[0-9a-f]{16}\b", "", frame)
    for escape, char in LEGACY_ESCAPES.items():
        frame = frame.replace(escape, char)
    # Any other character as `$u<hex>$`.
    frame = re.sub(r"\$u([0-9a-f]{2,6})\$", lambda m: chr(int(m.group(1), 16)), frame)
    frame = frame.replace("..", "::")
    # A path segment that starts with an escape is mangled with a leading underscore
    # (`_$LT$`, `_$u7b$$u7b$closure$u7d$$u7d$`).
    return re.sub(r"(^|\s|::)_([<{])", r"\1\2", frame)


def holder(frames, n=3):
    """The first frames that are not allocation plumbing: who asked for the memory."""
    frames = [demangle(f) for f in frames]
    picked = [f for f in frames if not f.startswith(PLUMBING)][:n]
    short = [re.sub(r"\s+", " ", f)[:110] for f in picked]
    return " ← ".join(f"`{s}`" for s in short) or "(no symbol)"


def totals(text):
    out = {}
    for key, pattern in (("leaked", r"total memory leaked: ([\d.]+[BKMG])"),
                         ("peak", r"peak heap memory consumption: ([\d.]+[BKMG])"),
                         ("calls", r"calls to allocation functions: (\d+)")):
        m = re.search(pattern, text)
        out[key] = m.group(1) if m else None
    return out


def status_kb(path):
    kb = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"(\w+):\s+(\d+) kB", line)
        if m:
            kb[m.group(1)] = int(m.group(2))
    return kb


def main(heap_txt, status_path, commit, users, idle, connections):
    text = open(heap_txt, encoding="utf-8", errors="replace").read()
    entries = parse_leaks(text)
    tot = totals(text)
    st = status_kb(status_path)
    live = size_bytes(tot["leaked"]) if tot["leaked"] else sum(e["bytes"] for e in entries)
    anon = st.get("RssAnon", 0) * 1024
    users_n = int(users)
    w = print
    w("# shopchat: what outlives the load (heap profile)")
    w("")
    w(f"Produced by `APP_HEAPTRACK=1 APP_USERS={users} bench/apptraffic.sh` (bench/README.md, "
      f"\"Memory\") at commit `{commit}` on {time.strftime('%Y-%m-%d', time.gmtime())}. shopchat, "
      "built with glibc's malloc (feature `system-allocator`: heaptrack sees only what goes through "
      f"malloc), ran under heaptrack: {users_n:,} simulated app users over {connections} keep-alive "
      f"connections as in RESULTS-apptraffic.md (heaptrack slows every allocation, so this run's "
      f"latencies mean nothing), then {idle} s without a request (past the idle release at 60 s), "
      "then SIGKILL, so nothing was freed at exit: what heaptrack counts as leaked is what was "
      "still allocated in the idle process.")
    w("")
    top = [e for e in entries[:5] if e["bytes"] >= 64 * 1024]
    names = "; ".join(f"{mb(e['bytes'])} MB {holder(e['frames'], 1)}" for e in top)
    w(f"**What outlives the load** (heaptrack, {users_n:,} app users, {idle} s idle, commit "
      f"`{commit}`): {mb(live)} MB still allocated, of {mb(anon)} MB of heap and stacks "
      f"(RssAnon; RSS {mb(st.get('VmRSS', 0) * 1024)} MB, code pages "
      f"{mb(st.get('RssFile', 0) * 1024)} MB, with glibc's malloc); the rest of RssAnon is freed "
      "memory the allocator keeps and the threads' stacks. Largest holders: "
      f"{names or 'none above 64 KB'}.")
    w("")
    w("| still allocated | allocations | allocated by (first frames outside the allocator and the "
      "standard library, innermost first) |")
    w("|---:|---:|---|")
    for e in entries[:25]:
        w(f"| {e['shown']} | {e['calls']:,} | {holder(e['frames'])} |")
    w("")
    w(f"heaptrack's totals for the whole run: {tot['calls'] or '?'} calls to allocation functions, "
      f"peak heap {tot['peak'] or '?'}, still allocated at the kill {tot['leaked'] or '?'}. "
      "Process status just before the kill: "
      + ", ".join(f"{k} {mb(v * 1024)} MB" for k, v in st.items()) + ".")
    w("")
    w("The full leak report (every backtrace) is `bench/.work/heap-<users>.txt` (not in git); "
      "`heaptrack --analyze` opens the data file next to it.")


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
