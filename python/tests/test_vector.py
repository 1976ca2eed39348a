"""``metarim.make_vec`` against gymnasium's ``SyncVectorEnv`` of minigrid envs: the same
batched observations, rewards and flags at every step, autoresets included."""

import gymnasium as gym
import minigrid  # noqa: F401
import numpy as np
import pytest

import metarim
from conftest import SEED_BASE

LEVELS = metarim.level_ids()
NUM_ENVS = 4
STEPS = 400


def same(ours, theirs, where):
    assert np.array_equal(ours["image"], theirs["image"]), where
    assert ours["image"].dtype == theirs["image"].dtype, where
    assert np.array_equal(ours["direction"], theirs["direction"]), where
    assert tuple(ours["mission"]) == tuple(theirs["mission"]), where


@pytest.mark.parametrize("level", LEVELS)
def test_make_vec_equals_sync_vector_env(level):
    threads = 2 if LEVELS.index(level) % 2 else 1
    ours = metarim.make_vec(level, NUM_ENVS, threads=threads)
    theirs = gym.vector.SyncVectorEnv([lambda: gym.make(level)] * NUM_ENVS)
    seed = SEED_BASE + 11
    o, _ = ours.reset(seed=seed)
    t, _ = theirs.reset(seed=seed)
    same(o, t, f"{level} reset")
    rng = np.random.default_rng(seed)
    ends = 0
    for k in range(STEPS):
        a = rng.integers(0, 7, size=NUM_ENVS)
        o, ro, term_o, trunc_o, info_o = ours.step(a)
        t, rt, term_t, trunc_t, info_t = theirs.step(a)
        where = f"{level} step {k + 1}"
        same(o, t, where)
        assert np.array_equal(ro, rt) and ro.dtype == np.float64, where
        assert np.array_equal(term_o, term_t) and term_o.dtype == np.bool_, where
        assert np.array_equal(trunc_o, trunc_t) and trunc_o.dtype == np.bool_, where
        assert info_o == {}, where
        ends += int((term_o | trunc_o).sum())
    # Both reset their envs again: the autoreset must have been exercised on short levels.
    if "S4" in level or "Empty-5x5" in level:
        assert ends > 0, level


def test_make_vec_spaces_and_tokens():
    envs = metarim.make_vec("metarim/BabyAI-GoToLocal-v0", 8, seed=3)
    obs, info = envs.reset()
    assert envs.observation_space.contains(obs)
    assert obs["mission_tokens"].shape == (8, metarim.MAX_TOKENS)
    words = metarim.words()
    for mission, tokens in zip(obs["mission"], obs["mission_tokens"]):
        assert [words[t - 2] for t in tokens if t > 0] == mission.split()
    # seed=3 at construction: the first reset is reset(seed=3).
    again = metarim.make_vec("BabyAI-GoToLocal-v0", 8)
    o2, _ = again.reset(seed=3)
    assert np.array_equal(obs["image"], o2["image"])
    assert envs.action_space.shape == (8,)


def test_threads_do_not_change_results():
    a = metarim.make_vec("BabyAI-GoToLocal-v0", 37, seed=1, threads=1)
    b = metarim.make_vec("BabyAI-GoToLocal-v0", 37, seed=1, threads=4)
    a.reset()
    b.reset()
    rng = np.random.default_rng(0)
    for _ in range(200):
        act = rng.integers(0, 7, size=37)
        ra, rb = a.step(act), b.step(act)
        assert np.array_equal(ra[0]["image"], rb[0]["image"])
        assert np.array_equal(ra[1], rb[1])
        assert np.array_equal(ra[2], rb[2]) and np.array_equal(ra[3], rb[3])


def test_vector_bad_input():
    with pytest.raises(ValueError, match="num_envs"):
        metarim.make_vec("BabyAI-GoToLocal-v0", 0)
    # Refused before anything is allocated (a million worlds would exhaust memory).
    with pytest.raises(ValueError, match="num_envs must be 1 to 65536, got 1000000"):
        metarim.make_vec("BabyAI-GoToLocal-v0", 1_000_000)
    with pytest.raises(ValueError, match="threads must be 1 to 4096, got 100000"):
        metarim.make_vec("BabyAI-GoToLocal-v0", 2, threads=100_000)
    envs = metarim.make_vec("BabyAI-GoToLocal-v0", 2)
    with pytest.raises(RuntimeError, match="before the first reset"):
        envs.step(np.zeros(2, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="environment 1"):
        envs.step(np.array([0, 9]))
    with pytest.raises(ValueError, match="seeds for 2"):
        envs.reset(seed=[1, 2, 3])
