#!/usr/bin/env python3
"""Record numpy's SeedSequence -> PCG64 -> Generator outputs for core's bit-exact twin
(core/src/rng/numpy.rs; checked by tests/tests/numpy_rng.rs). Writes
tests/data/numpy-rng-vectors.txt. Needs numpy (pip install numpy).

    python3 scripts/numpy-rng-vectors.py > tests/data/numpy-rng-vectors.txt

Per seed: the SeedSequence pool, PCG64's state after seeding, 8 raw 64-bit outputs of a fresh
generator, then one line per call of a fixed mixed sequence of Generator calls on another fresh
generator (ints, floats as float.hex, `shuffle` of a list), which exercises the spare 32-bit
half between calls.
"""
import numpy as np

SEEDS = [0, 1, 2, 3, 7, 42, 1234, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 1, 2**40 + 17,
         12345678901234, 2**63 - 1, 2**63, 2**64 - 1]
# (kind, low, high): the ranges minigrid's generators use, and the edge cases of numpy's
# bounded integers (a 2^32 range, a 64-bit range, negative lows).
CALLS = [("int", 0, 2), ("int", 0, 7), ("int", 1, 100), ("random", 0, 0), ("int", 0, 4),
         ("int", 3, 2**33 + 5), ("uniform", 0.5, 2.5), ("int", 0, 2**32), ("int", -5, 5),
         ("int", 0, 3), ("random", 0, 0), ("int", 0, 2), ("int", 0, 2), ("int", 1, 6),
         ("int", -2**62, 2**62), ("int", 0, 5), ("int", 0, 6), ("int", 0, 8), ("int", 0, 11),
         ("int", 0, 1000003), ("shuffle", 10, 0), ("int", 0, 9), ("shuffle", 3, 0)]


def main():
    print(f"# numpy {np.__version__}: scripts/numpy-rng-vectors.py")
    for seed in SEEDS:
        ss = np.random.SeedSequence(seed)
        print(f"seed {seed}")
        print("pool " + " ".join(str(int(w)) for w in ss.pool))
        bg = np.random.PCG64(ss)
        st = bg.state["state"]
        print(f"state {st['state']} {st['inc']}")
        raw = bg.random_raw(8)
        print("raw " + " ".join(str(int(v)) for v in raw))
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
        for kind, lo, hi in CALLS:
            if kind == "int":
                print(f"int {lo} {hi} {int(g.integers(lo, hi))}")
            elif kind == "shuffle":
                items = list(range(lo))
                g.shuffle(items)
                print(f"shuffle {lo} " + " ".join(str(i) for i in items))
            elif kind == "random":
                print(f"random {float(g.random()).hex()}")
            else:
                print(f"uniform {float(lo).hex()} {float(hi).hex()} {float(g.uniform(lo, hi)).hex()}")


if __name__ == "__main__":
    main()
