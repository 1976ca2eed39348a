"""Farama minigrid throughput: random actions for 5 s (the Python side of
scripts/bench-env-vs-minigrid.sh).

usage: python scripts/minigrid_bench.py [ENV_ID]   (needs gymnasium + minigrid==3.2.0)
"""
import time, gymnasium as gym, minigrid, random, sys
env_id = sys.argv[1] if len(sys.argv)>1 else "BabyAI-GoToLocal-v0"
env = gym.make(env_id); env.reset(seed=0)
rng = random.Random(0); n=0; resets=0
t=time.perf_counter()
while time.perf_counter()-t < 5.0:
    for _ in range(1000):
        o,r,te,tr,_ = env.step(rng.randrange(7)); n+=1
        if te or tr: env.reset(); resets+=1
dt=time.perf_counter()-t
print(f"{env_id}: {n/dt:.0f} steps/s (incl {resets} resets)")
