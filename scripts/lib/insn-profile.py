#!/usr/bin/env python3
"""Where the instructions of one repeated unit of work go, function by function.

scripts/run-firmware.sh (FW_PROFILE=1) runs the firmware once plainly and once with one unit of
work repeated (every policy step computed twice, or every level generated twice), each time with
the insn-count plugin writing a block profile (firmware/tools/insncount.c, `profile=FILE`: one
line "START_PC INSNS EXECUTIONS" per translated block). The difference of the two profiles,
divided by how many units the run did, is what one unit costs; this script attributes each
block to the function its first instruction lies in (from `nm -S`) and prints the functions by
cost. Since both profiles count every executed instruction, their totals must differ by exactly
what the plain counts say (`--expect`): a check that nothing was lost.

usage: insn-profile.py --nm NM --elf ELF --plain P1 --repeated P2 --units N --expect D
                       --what "policy step" [--top 20]
"""

import argparse
import bisect
import subprocess
import sys
from collections import Counter


def functions(nm, elf):
    """(starts, [(start, end, name)]) of the ELF's code symbols, sorted, Thumb bit cleared."""
    out = subprocess.run(
        [nm, "-S", "-C", "--defined-only", elf], check=True, capture_output=True, text=True
    ).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in ("t", "T", "w", "W"):
            start = int(parts[0], 16) & ~1
            syms.append((start, start + int(parts[1], 16), parts[3]))
    syms.sort()
    return [s[0] for s in syms], syms


def profile(path, starts, syms):
    """Instructions per function over the whole run (blocks outside any symbol: '(no symbol)')."""
    cost = Counter()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 3:
                sys.exit(f"insn-profile: {path}:{n}: not 'PC INSNS EXECUTIONS': {line.strip()!r}")
            pc, insns, runs = int(parts[0], 16) & ~1, int(parts[1]), int(parts[2])
            i = bisect.bisect_right(starts, pc) - 1
            name = syms[i][2] if i >= 0 and pc < syms[i][1] else "(no symbol)"
            cost[name] += insns * runs
    return cost


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nm", required=True)
    ap.add_argument("--elf", required=True)
    ap.add_argument("--plain", required=True, help="profile of the plain run")
    ap.add_argument("--repeated", required=True, help="profile of the run with the unit repeated")
    ap.add_argument("--units", type=int, required=True, help="units of work the run did")
    ap.add_argument("--expect", type=int, required=True, help="repeated minus plain instruction count")
    ap.add_argument("--what", required=True, help="the unit, for the heading")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    if a.units <= 0:
        sys.exit(f"insn-profile: --units {a.units}: must be > 0")
    starts, syms = functions(a.nm, a.elf)
    plain = profile(a.plain, starts, syms)
    repeated = profile(a.repeated, starts, syms)
    total = sum(repeated.values()) - sum(plain.values())
    if total != a.expect:
        sys.exit(
            f"insn-profile: the profiles differ by {total} instructions, the counts by {a.expect}:"
            " a profile is incomplete"
        )
    diff = {k: repeated[k] - plain[k] for k in set(plain) | set(repeated)}
    diff = {k: v for k, v in diff.items() if v != 0}
    ranked = sorted(diff.items(), key=lambda kv: (-kv[1], kv[0]))
    print(f"insn-profile: per {a.what}: {total / a.units:.1f} instructions ({a.units} units), by function:")
    shown = ranked[: a.top]
    for name, v in shown:
        print(f"  {v / a.units:10.1f}  {100 * v / total:5.1f}%  {name}")
    rest = sum(v for _, v in ranked[a.top :])
    if rest:
        print(f"  {rest / a.units:10.1f}  {100 * rest / total:5.1f}%  ({len(ranked) - a.top} other functions)")


if __name__ == "__main__":
    main()
