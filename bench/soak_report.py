#!/usr/bin/env python3
"""bench/soak_report.py CSV JSON WARNINGS COMMIT: the Markdown report of bench/soak.sh.

Flat means: over the second half of the run, nothing exceeds what the first half (under the same
load) reached by more than a margin — RSS by 20 % + 4 MB, open files by 8, each cache by 25 % + 100
entries. A structure that grows with the number of keys seen (not with the keys of the last
minutes) fails that within an hour of new random keys.
"""
import csv
import json
import os
import platform
import sys
import time


def parse_kv(text):
    out = {}
    for item in (text or "").split():
        k, _, v = item.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def main():
    path, summary, warnings, commit = sys.argv[1:5]
    data = json.loads(summary)
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append({
                "t": int(r["elapsed_s"]),
                "requests": int(r["requests"]),
                "rss": int(r["rss_kb"]),
                "fds": int(r["fds"]),
                "caches": parse_kv(r["caches"]),
            })
    # The first sample is taken before any load.
    loaded = rows[1:] or rows
    half = len(loaded) // 2 or 1
    first, second = loaded[:half], loaded[half:] or loaded[:half]

    def peak(rs, key):
        return max((key(r) for r in rs), default=0)

    verdicts = []
    rss1, rss2 = peak(first, lambda r: r["rss"]), peak(second, lambda r: r["rss"])
    verdicts.append(("RSS (kB)", rss1, rss2, rss2 <= rss1 * 1.2 + 4096))
    fd1, fd2 = peak(first, lambda r: r["fds"]), peak(second, lambda r: r["fds"])
    verdicts.append(("open files", fd1, fd2, fd2 <= fd1 + 8))
    names = sorted({k for r in rows for k in r["caches"]})
    for n in names:
        c1 = peak(first, lambda r: r["caches"].get(n, 0))
        c2 = peak(second, lambda r: r["caches"].get(n, 0))
        verdicts.append((f"cache `{n}`", c1, c2, c2 <= c1 * 1.25 + 100))
    flat = all(v[3] for v in verdicts)

    w = print
    w("# Soak — bench/soak.sh")
    w()
    w(f"Commit `{commit}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
      f"{os.cpu_count()} cores, {platform.system()} {platform.release()}. "
      f"The quick data set of bench/run.sh, shopchat's release build with the throttle on "
      f"(600/min), the database on the same machine.")
    w()
    answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(data["answers"].items()))
    w(f"**{data['minutes']:g} minutes at {data['rate']} requests/s**: {data['requests']:,} requests "
      f"({answers}); {data['errors']:,} transport errors; {warnings} WARN/ERROR lines in shopchat's "
      f"log. Mix: 55 % \"nothing new\" polls, 10 % message pages, 8 % conversation lists, 2 % posted "
      f"messages (10,000 valid tokens), 15 % random bearer tokens from random IPv6 /64s, 10 % no "
      f"token from random IPv4 addresses (so a new throttle key about every 10 ms).")
    w()
    w(f"**Verdict: {'flat' if flat else 'GROWING'}** — peak over the first half of the run under "
      f"load against the peak over the second half:")
    w()
    w("| what | first half | second half | flat |")
    w("|---|---:|---:|---|")
    for name, a, b, ok in verdicts:
        w(f"| {name} | {a:,} | {b:,} | {'yes' if ok else '**no**'} |")
    w()
    w("Samples (every few minutes):")
    w()
    step = max(1, len(rows) // 14)
    header = ["minute", "requests", "RSS MB", "fds"] + names
    w("| " + " | ".join(header) + " |")
    w("|" + "---:|" * len(header))
    for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
        cells = [f"{r['t'] / 60:.1f}", f"{r['requests']:,}", f"{r['rss'] / 1024:.1f}", str(r["fds"])]
        cells += [f"{r['caches'].get(n, 0):,}" for n in names]
        w("| " + " | ".join(cells) + " |")
    w()
    w("`rate_limit` holds the throttle windows of the last one to two minutes (two generations, "
      "dropped whole: src/http/ratelimit.rs); `failed_tokens` the unknown tokens of the last "
      "`SHOPCHAT_AUTH_CACHE_MS` (1 s); `tokens` the valid ones of the last second; `token_touches` "
      "the last one or two touch intervals; `participants` and `poll_knowledge` grow with the "
      "conversations polled, which this mix bounds (10,000 clients).")
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
