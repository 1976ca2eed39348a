#!/usr/bin/env bash
# Check that documentation points at things that exist: every backticked repository path in the
# given Markdown files must exist, and every backticked code name must occur in the project's
# sources. Fails (status 1) listing what it did not find.
#
# usage: bash scripts/check-doc-paths.sh [FILE.md ...]     (default: docs/DESIGN.md docs/TOOLCHAINS.md docs/EMBEDDED.md)
#
# What counts, inside single backticks (fenced code blocks are skipped):
# - a path: a token without spaces whose first component is a top-level entry of the repository
#   (`core/src/nn/rim.rs`, `experiments/`, `docs/GPU.md`) or a top-level file (`README.md`);
#   globs (`experiments/*.toml`) must match at least one file. A relative path that leaves the
#   repository (`../...`) is an error: the project must not point at files beside it. (Absolute
#   system paths such as `/usr/bin/rustc` are not checked.)
# - a code name: an identifier or a Rust path (`select_top_k`, `Policy::step`, `ModelDims`),
#   optionally followed by `()`; the last segment must occur as a whole word in a source file
#   other than the checked file (tracked or untracked-but-not-ignored files under git).
# Anything else (commands, flags, values, output file names like `train.jsonl`, build outputs
# under `target/`) is not checked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ $# -eq 0 ]; then set -- docs/DESIGN.md docs/TOOLCHAINS.md docs/EMBEDDED.md; fi

# Source files to look names up in.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t SOURCES < <(git ls-files -co --exclude-standard -- \
        '*.rs' '*.cu' '*.cuh' '*.c' '*.h' '*.cpp' '*.toml' '*.sh' '*.py' '.ci/run' |
        while read -r f; do [ -f "$f" ] && echo "$f"; done)
else
    mapfile -t SOURCES < <(find . -path ./target -prune -o -type f \( -name '*.rs' -o -name '*.cu' \
        -o -name '*.cuh' -o -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.toml' \
        -o -name '*.sh' -o -name '*.py' \) -print | sed 's|^\./||')
fi

bad=0
checked_paths=0
checked_names=0
report() { echo "check-doc-paths: $1:$2: $3" >&2; bad=1; }

for doc in "$@"; do
    [ -f "$doc" ] || { report "$doc" 0 "no such file"; continue; }
    # One "LINE<TAB>TOKEN" per backticked span outside fenced code blocks.
    while IFS=$'\t' read -r line tok; do
        [ -n "$tok" ] || continue
        case "$tok" in *" "*) continue ;; esac
        first="${tok%%/*}"
        if [[ "$tok" == ../* || "$tok" == */../* ]]; then
            report "$doc" "$line" "\`$tok\` points outside the repository"
        elif [[ "$first" == target ]]; then
            # Build output (`target/cuda-tools`, ...): made by a script, absent on a fresh clone.
            continue
        elif [[ "$tok" == */* && -n "$first" && -e "$first" ]] ||
            [[ "$tok" != */* && "$tok" == *.* && -f "$tok" ]]; then
            checked_paths=$((checked_paths + 1))
            path="${tok%/}"
            # shellcheck disable=SC2206 # intended glob expansion
            matches=($path)
            if [ ! -e "${matches[0]}" ]; then
                report "$doc" "$line" "path \`$tok\` does not exist"
            fi
        elif [[ "$tok" =~ ^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$ ]]; then
            name="${tok%()}"
            name="${name##*::}"
            # Plain lowercase words without an underscore are ordinary words, not code names.
            if [[ "$tok" != *::* && "$name" =~ ^[a-z0-9]+$ ]]; then continue; fi
            checked_names=$((checked_names + 1))
            others=()
            for f in "${SOURCES[@]}"; do [ "$f" = "$doc" ] || others+=("$f"); done
            if ! grep -qw -- "$name" "${others[@]}"; then
                report "$doc" "$line" "name \`$tok\` occurs in no source file"
            fi
        fi
    done < <(awk '
        /^[[:space:]]*```/ { fence = !fence; next }
        fence { next }
        {
            s = $0
            while (match(s, /`[^`]+`/)) {
                printf "%d\t%s\n", NR, substr(s, RSTART + 1, RLENGTH - 2)
                s = substr(s, RSTART + RLENGTH)
            }
        }' "$doc")
done

if [ "$bad" != 0 ]; then
    echo "check-doc-paths: FAILED" >&2
    exit 1
fi
echo "check-doc-paths: ok ($*: $checked_paths paths, $checked_names names)"
