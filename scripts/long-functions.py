#!/usr/bin/env python3
"""List the project's functions longer than a limit (issue "One home for each idea": no
function outside tests over 150 lines).

Reads the files git tracks (Rust, CUDA and C sources), finds each function's body by matching
braces (strings, character literals and // comments skipped) and prints those over the limit,
longest first, as `LINES PATH:LINE NAME` with `(test)` for test code: files under a `tests/`
folder or named `tests.rs`, functions marked `#[test]`, and everything after a file's
`#[cfg(test)]` module. With `--check`, exits 1 when a function outside tests is over the limit.

usage: python3 scripts/long-functions.py [--limit N] [--check]
"""

import argparse
import re
import subprocess
import sys

FN = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?fn\s+(\w+)"
    r"|^\s*(?:extern \"C\"\s+)?__global__\s+void\s+(\w+)"
    r"|^\s*(?:static\s+)?(?:__device__\s+)?(?:__forceinline__\s+)?(?:inline\s+)?"
    r"(?:void|float|int|bool|u32|u64)\s+(\w+)\s*\("
)


def code_of(line: str) -> str:
    """The line without its // comment, string and character literals."""
    line = re.sub(r'"([^"\\]|\\.)*"', '""', line)
    line = re.sub(r"'([^'\\]|\\.)'", "''", line)
    return line.split("//", 1)[0]


def functions(path: str, lines: list[str]):
    """(first line, line count, name, is_test) of each function with a body."""
    test_from = next(
        (
            i
            for i, l in enumerate(lines)
            if l.strip() == "#[cfg(test)]"
            and i + 1 < len(lines)
            and re.match(r"\s*(pub\s+)?mod\s+\w+\s*\{", lines[i + 1])
        ),
        len(lines),
    )
    in_tests_dir = "/tests/" in f"/{path}" or path.endswith("tests.rs")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        name = m.group(1) or m.group(2) or m.group(3)
        depth, opened, j = 0, False, i
        while j < len(lines):
            code = code_of(lines[j])
            if not opened and code.rstrip().endswith(";") and "{" not in code:
                break  # a declaration without a body
            for c in code:
                if c == "{":
                    depth += 1
                    opened = True
                elif c == "}":
                    depth -= 1
            if opened and depth <= 0:
                break
            j += 1
        if not opened:
            continue
        marked = any("#[test]" in lines[k] for k in range(max(0, i - 3), i))
        yield i + 1, j - i + 1, name, in_tests_dir or marked or i > test_from


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=150, help="lines (default 150)")
    ap.add_argument("--check", action="store_true", help="exit 1 if code outside tests is over")
    args = ap.parse_args()
    files = subprocess.run(
        ["git", "ls-files", "*.rs", "*.cu", "*.cuh", "*.c", "*.h"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    over = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        for first, count, name, is_test in functions(path, lines):
            if count > args.limit:
                over.append((count, path, first, name, is_test))
    for count, path, first, name, is_test in sorted(over, reverse=True):
        print(f"{count} {path}:{first} {name}{' (test)' if is_test else ''}")
    outside = [o for o in over if not o[4]]
    print(f"long-functions: {len(outside)} outside tests over {args.limit} lines", file=sys.stderr)
    return 1 if args.check and outside else 0


if __name__ == "__main__":
    sys.exit(main())
