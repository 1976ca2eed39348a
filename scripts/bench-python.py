"""Environment steps per second from Python: metarim.make_vec(LEVEL, 64) against gymnasium's
SyncVectorEnv and AsyncVectorEnv of 64 minigrid 3.2.0 envs, same machine, same run, random
actions (a fixed-seed numpy generator), observations returned as each API returns them.
Rounds alternate the three; medians over rounds and their ratios are printed last.

usage: python scripts/bench-python.py [LEVEL] [SECONDS_PER_MEASURE] [ROUNDS] [NUM_ENVS]
(run by scripts/bench-python.sh, which builds the venv)"""

import os
import statistics
import sys
import time

import gymnasium as gym
import minigrid  # noqa: F401
import numpy as np

import metarim

LEVEL = sys.argv[1] if len(sys.argv) > 1 else "BabyAI-GoToLocal-v0"
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
N = int(sys.argv[4]) if len(sys.argv) > 4 else 64


def measure(envs, seconds):
    """Env steps per second (N per vector step) over about `seconds`, after a warm-up."""
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    for _ in range(10):
        envs.step(rng.integers(0, 7, size=N))
    steps = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(50):
            obs, _, _, _, _ = envs.step(rng.integers(0, 7, size=N))
            steps += N
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return steps / dt, obs


def main():
    makers = {
        "metarim make_vec": lambda: metarim.make_vec(LEVEL, N),
        "minigrid SyncVectorEnv": lambda: gym.vector.SyncVectorEnv(
            [lambda: gym.make(LEVEL)] * N
        ),
        # minigrid's mission space cannot live in shared memory (gymnasium refuses it).
        "minigrid AsyncVectorEnv": lambda: gym.vector.AsyncVectorEnv(
            [lambda: gym.make(LEVEL)] * N, shared_memory=False
        ),
    }
    print(
        f"bench-python: {LEVEL}, {N} envs, {SECONDS:.0f} s per measure, {ROUNDS} rounds, "
        f"{os.cpu_count()} CPUs, metarim {metarim.__version__}, minigrid {minigrid.__version__}",
        flush=True,
    )
    rates = {k: [] for k in makers}
    for r in range(ROUNDS):
        for name, make in makers.items():
            envs = make()
            rate, obs = measure(envs, SECONDS)
            assert obs["image"].shape == (N, 7, 7, 3)
            envs.close()
            rates[name].append(rate)
            print(f"bench-python: round {r + 1} {name}: {rate:,.0f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ours = med["metarim make_vec"]
    best_ref = max(med["minigrid SyncVectorEnv"], med["minigrid AsyncVectorEnv"])
    for name, m in med.items():
        print(f"bench-python: median {name}: {m:,.0f} steps/s ({', '.join(f'{x:,.0f}' for x in rates[name])})")
    print(
        f"bench-python: {LEVEL} make_vec={ours:.0f} sync={med['minigrid SyncVectorEnv']:.0f} "
        f"async={med['minigrid AsyncVectorEnv']:.0f} steps/s ratio_to_faster={ours / best_ref:.0f}x"
    )


if __name__ == "__main__":
    main()
