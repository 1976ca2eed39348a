"""``metarim/<ID>`` against minigrid 3.2.0's ``<ID>``: identical observations, rewards, flags
and missions at every step of seeded random episodes, for every registered level."""

import gymnasium as gym
import minigrid  # noqa: F401  (registers minigrid's ids)
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metarim
from conftest import SEED_BASE, SEEDS

LEVELS = metarim.level_ids()


def test_every_level_is_registered_and_known_to_minigrid():
    assert len(LEVELS) == 42
    for level in LEVELS:
        assert f"metarim/{level}" in gym.registry
        assert level in gym.registry, f"{level} is not a minigrid id"


def same_obs(ours, theirs, where):
    assert set(ours) == set(theirs), where
    assert ours["image"].dtype == theirs["image"].dtype == np.uint8, where
    assert ours["image"].shape == theirs["image"].shape == (7, 7, 3), where
    assert np.array_equal(ours["image"], theirs["image"]), where
    assert ours["direction"] == theirs["direction"], where
    assert ours["mission"] == theirs["mission"], where


def same_episode(ours, theirs, actions, label):
    """Step both envs with ``actions`` until the episode ends; every observation, reward and
    flag must agree. Returns the steps taken."""
    for k, a in enumerate(actions):
        o, ro, term_o, trunc_o, _ = ours.step(int(a))
        t, rt, term_t, trunc_t, _ = theirs.step(int(a))
        where = f"{label} step {k + 1} action {a}"
        same_obs(o, t, where)
        assert (ro, term_o, trunc_o) == (rt, term_t, trunc_t), where
        assert isinstance(ro, float), where
        if term_o or trunc_o:
            return k + 1
    return len(actions)


@pytest.mark.parametrize("level", LEVELS)
def test_random_episodes_equal_minigrid(level):
    ours = gym.make(f"metarim/{level}").unwrapped
    theirs = gym.make(level).unwrapped
    steps = 0
    for seed in range(SEED_BASE, SEED_BASE + SEEDS):
        o, _ = ours.reset(seed=seed)
        t, _ = theirs.reset(seed=seed)
        same_obs(o, t, f"{level} seed {seed} reset")
        actions = np.random.default_rng(seed).integers(0, 7, size=100_000)
        steps += same_episode(ours, theirs, actions, f"{level} seed {seed}")
        # Without a seed, reset continues the level generator, as minigrid's does.
        o, _ = ours.reset()
        t, _ = theirs.reset()
        same_obs(o, t, f"{level} seed {seed}: the reset after it")
    assert steps > 0


@pytest.mark.parametrize("level", LEVELS)
def test_done_action_episodes_equal_minigrid(level, monkeypatch):
    """Under BabyAI's done-action rules (minigrid's ``BABYAI_DONE_ACTIONS``): ``done`` decides
    success and failure of BabyAI missions; other levels ignore the rules."""
    from minigrid.envs.babyai.core import verifier

    # minigrid read the variable at import; its verifier looks the module flag up per step.
    monkeypatch.setattr(verifier, "use_done_actions", True)
    ours = gym.make(f"metarim/{level}", done_actions=True).unwrapped
    theirs = gym.make(level).unwrapped
    assert ours.done_actions
    for seed in range(SEED_BASE, SEED_BASE + SEEDS):
        o, _ = ours.reset(seed=seed)
        t, _ = theirs.reset(seed=seed)
        same_obs(o, t, f"{level} seed {seed} reset (done-action rules)")
        # Forward-heavy, `done` one step in nine, so that episodes reach objects first.
        rng = np.random.default_rng(seed)
        actions = rng.choice([0, 1, 2, 2, 2, 3, 4, 5, 6], size=100_000)
        same_episode(ours, theirs, actions, f"{level} seed {seed} (done-action rules)")


def test_done_actions_follow_the_environment_variable_as_minigrid_reads_it(monkeypatch):
    level = "metarim/BabyAI-GoToObj-v0"
    monkeypatch.delenv("BABYAI_DONE_ACTIONS", raising=False)
    assert not gym.make(level).unwrapped.done_actions
    # Any non-empty value turns them on, "0" included, as in minigrid.
    for value in ("1", "0"):
        monkeypatch.setenv("BABYAI_DONE_ACTIONS", value)
        assert gym.make(level).unwrapped.done_actions
        assert metarim.make_vec(level, 2).done_actions
    monkeypatch.setenv("BABYAI_DONE_ACTIONS", "")
    assert not gym.make(level).unwrapped.done_actions
    # An explicit keyword wins.
    monkeypatch.setenv("BABYAI_DONE_ACTIONS", "1")
    assert not gym.make(level, done_actions=False).unwrapped.done_actions
    # A `done` far from any target ends a BabyAI episode with no reward under the rules.
    env = gym.make(level, done_actions=True)
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(6)
    assert (reward, terminated, truncated) == (0.0, True, False)


@pytest.mark.parametrize("level", LEVELS)
def test_check_env(level):
    env = gym.make(f"metarim/{level}", render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)


def test_render_has_minigrids_size():
    for level in ["BabyAI-GoToLocal-v0", "MiniGrid-DoorKey-5x5-v0", "BabyAI-GoTo-v0", "MiniGrid-FourRooms-v0"]:
        ours = gym.make(f"metarim/{level}", render_mode="rgb_array")
        theirs = gym.make(level, render_mode="rgb_array")
        ours.reset(seed=5)
        theirs.reset(seed=5)
        a, b = ours.render(), theirs.render()
        assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, level


def test_minigrid_wrappers_work():
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    level = "BabyAI-GoToLocal-v0"
    ours = ImgObsWrapper(gym.make(f"metarim/{level}"))
    theirs = ImgObsWrapper(gym.make(level))
    assert ours.observation_space == theirs.observation_space
    assert np.array_equal(ours.reset(seed=2)[0], theirs.reset(seed=2)[0])
    ours = RGBImgPartialObsWrapper(gym.make(f"metarim/{level}"), tile_size=8)
    theirs = RGBImgPartialObsWrapper(gym.make(level), tile_size=8)
    o, t = ours.reset(seed=2)[0], theirs.reset(seed=2)[0]
    assert o["image"].shape == t["image"].shape == (56, 56, 3)
    assert ours.observation_space["image"] == theirs.observation_space["image"]
    from minigrid.wrappers import FlatObsWrapper

    ours = FlatObsWrapper(gym.make(f"metarim/{level}"))
    theirs = FlatObsWrapper(gym.make(level))
    assert ours.observation_space == theirs.observation_space
    assert np.array_equal(ours.reset(seed=3)[0], theirs.reset(seed=3)[0])
    assert np.array_equal(ours.step(2)[0], theirs.step(2)[0])


@pytest.mark.parametrize(
    "level", ["BabyAI-GoToLocal-v0", "MiniGrid-DoorKey-8x8-v0", "BabyAI-UnlockLocal-v0"]
)
def test_fully_observed_and_rgb_wrappers_equal_minigrids(level):
    from minigrid.wrappers import FullyObsWrapper, RGBImgObsWrapper

    for wrapper in (FullyObsWrapper,):
        ours = wrapper(gym.make(f"metarim/{level}"))
        theirs = wrapper(gym.make(level))
        assert ours.observation_space["image"] == theirs.observation_space["image"]
        o, t = ours.reset(seed=4)[0], theirs.reset(seed=4)[0]
        rng = np.random.default_rng(4)
        for k in range(60):
            assert np.array_equal(o["image"], t["image"]), f"{wrapper.__name__} step {k}"
            a = int(rng.integers(7))
            o, t = ours.step(a)[0], theirs.step(a)[0]
    ours = RGBImgObsWrapper(gym.make(f"metarim/{level}"), tile_size=8)
    theirs = RGBImgObsWrapper(gym.make(level), tile_size=8)
    o, t = ours.reset(seed=4)[0], theirs.reset(seed=4)[0]
    assert o["image"].shape == t["image"].shape and o["image"].dtype == t["image"].dtype


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown level id"):
        metarim.MetarimEnv("BabyAI-NoSuchLevel-v0")
    env = gym.make("metarim/BabyAI-GoToLocal-v0").unwrapped
    with pytest.raises(RuntimeError, match="before the first reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not one of minigrid's 7 actions"):
        env.step(7)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=2**64)


def test_mission_tokens_use_metarims_vocabulary():
    env = gym.make("metarim/BabyAI-GoToLocal-v0").unwrapped
    obs, _ = env.reset(seed=0)
    tokens = env.mission_tokens()
    words = metarim.words()
    n = int((tokens > 0).sum())
    assert n == len(obs["mission"].split())
    assert [words[t - 2] for t in tokens[:n]] == obs["mission"].split()
