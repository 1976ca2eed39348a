#!/usr/bin/env python3
"""Compare `metarim env dump` with minigrid's own levels, seed for seed (issue "Seed-exact
levels"): for every registered level id and each seed, minigrid's `env.reset(seed=S)` state
(grid, agent position and direction, mission, max_steps) against `metarim env dump --level L
--seed S`, and with `--resets K` also the levels of minigrid's K - 1 unseeded `reset()`s after
it against `metarim env dump --level L --seed S --count K --continue`. Prints one line per
level (matching states / states) and the first difference of the first mismatch; exits
non-zero when any state differs. Needs gymnasium and minigrid 3.2.0 (pip install
minigrid==3.2.0) and a metarim binary.

    python3 scripts/minigrid-levels.py --metarim target/release/metarim --seeds 0:200 --resets 5
    python3 scripts/minigrid-levels.py --levels BabyAI-GoToObj-v0,MiniGrid-DoorKey-8x8-v0 --seeds 0:20

`--record FILE.jsonl.gz` writes minigrid's states instead of comparing (one JSON line per
state: env_id, seed, reset, and the fields above): the vendored sample that
`tests/tests/golden_levels.rs` checks in `cargo test` was made with
    python3 scripts/minigrid-levels.py --seeds 0:3 --resets 3 --extra-seeds 4294967301,18446744073709551615 \
        --record tests/data/minigrid-3.2.0-levels.jsonl.gz
"""
import argparse
import contextlib
import gzip
import io
import json
import subprocess
import sys

import gymnasium as gym
import minigrid  # noqa: F401  (registers the envs)


def minigrid_states(env_id, seed, resets):
    """The level of `reset(seed=seed)` and of the `resets - 1` unseeded resets after it."""
    env = gym.make(env_id)
    out = []
    for i in range(resets):
        # BabyAI prints its rejected samples; keep the report readable.
        with contextlib.redirect_stdout(io.StringIO()):
            env.reset(seed=seed if i == 0 else None)
        out.append(state_of(env.unwrapped))
    return out


def state_of(u):
    g = u.grid.encode()
    w, h, _ = g.shape
    return {
        "width": int(u.width),
        "height": int(u.height),
        "grid": [[int(v) for v in g[x, y]] for y in range(h) for x in range(w)],
        "agent_pos": [int(u.agent_pos[0]), int(u.agent_pos[1])],
        "agent_dir": int(u.agent_dir),
        "mission": u.mission,
        "max_steps": int(u.max_steps),
    }


def metarim_states(binary, env_id, seed, resets):
    cmd = [binary, "env", "dump", "--level", env_id, "--seed", str(seed), "--count", str(resets)]
    if resets > 1:
        cmd.append("--continue")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    keys = ("width", "height", "grid", "agent_pos", "agent_dir", "mission", "max_steps")
    return [{k: d[k] for k in keys} for d in map(json.loads, out.splitlines())]


def first_difference(a, b):
    for k in a:
        if a[k] != b[k]:
            if k == "grid":
                i = next(i for i, (x, y) in enumerate(zip(a[k], b[k])) if x != y)
                return f"grid cell ({i % a['width']}, {i // a['width']}): minigrid {a[k][i]} metarim {b[k][i]}"
            return f"{k}: minigrid {a[k]!r} metarim {b[k]!r}"
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metarim", default="target/release/metarim")
    p.add_argument("--levels", help="comma-separated ids (default: every registered level)")
    p.add_argument("--seeds", default="0:20", help="A:B, seeds A..B-1")
    p.add_argument("--resets", type=int, default=1,
                   help="levels per seed: the seeded reset and the unseeded ones after it")
    p.add_argument("--extra-seeds", default="", help="comma-separated seeds added to the range")
    p.add_argument("--record", help="write minigrid's states to this .jsonl.gz instead of comparing")
    a = p.parse_args()
    lo, hi = (int(x) for x in a.seeds.split(":"))
    seeds = list(range(lo, hi)) + [int(x) for x in a.extra_seeds.split(",") if x]
    levels = a.levels.split(",") if a.levels else subprocess.run(
        [a.metarim, "env", "dump", "--list"], check=True, capture_output=True, text=True).stdout.split()
    if a.record:
        with gzip.open(a.record, "wt") as f:
            for env_id in levels:
                for seed in seeds:
                    for k, st in enumerate(minigrid_states(env_id, seed, a.resets)):
                        f.write(json.dumps({"env_id": env_id, "seed": seed, "reset": k + 1, **st},
                                           separators=(",", ":")) + "\n")
        return
    bad = 0
    for env_id in levels:
        same, total, first = 0, 0, None
        for seed in seeds:
            ms = minigrid_states(env_id, seed, a.resets)
            rs = metarim_states(a.metarim, env_id, seed, a.resets)
            for k, (m, r) in enumerate(zip(ms, rs)):
                total += 1
                diff = first_difference(m, r)
                if diff is None:
                    same += 1
                elif first is None:
                    first = f"seed {seed}, reset {k + 1}: {diff}"
            total += abs(len(ms) - len(rs))
        bad += total - same
        print(f"{env_id}: {same}/{total} states equal" + (f"; first difference {first}" if first else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
