"""metarim from Python: minigrid-exact BabyAI/MiniGrid levels stepped in Rust.

``import metarim`` registers a gymnasium id ``metarim/<ID>`` for every level id ``<ID>`` that
metarim implements (minigrid's ids, e.g. ``metarim/BabyAI-GoToLocal-v0``). Each gives the
observations, rewards, ``terminated``/``truncated`` flags and missions of minigrid 3.2.0's env
with the same id and the same ``reset(seed=...)``, step for step (python/tests check every
level against minigrid itself)::

    import gymnasium as gym
    import metarim

    env = gym.make("metarim/BabyAI-GoToLocal-v0")
    obs, info = env.reset(seed=0)       # obs: image (7, 7, 3) uint8, direction, mission
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    envs = metarim.make_vec("BabyAI-GoToLocal-v0", num_envs=64, seed=0)  # stepped in Rust
"""

from __future__ import annotations

from . import _metarim
from ._metarim import MAX_TOKENS, VIEW_SIZE, level_ids, words
from .envs import MetarimEnv, mission_space
from .vector import MetarimVectorEnv, make_vec

__all__ = [
    "MAX_TOKENS",
    "VIEW_SIZE",
    "MetarimEnv",
    "MetarimVectorEnv",
    "level_ids",
    "make_vec",
    "mission_space",
    "words",
]

try:
    from importlib.metadata import version as _version

    __version__ = _version("metarim")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"


def _register() -> None:
    import gymnasium

    for level_id in _metarim.level_ids():
        env_id = f"metarim/{level_id}"
        if env_id in gymnasium.registry:
            continue
        # No max_episode_steps: the env truncates itself at the level's step budget, as
        # minigrid's envs do (a TimeLimit would add a second, different limit).
        gymnasium.register(
            id=env_id,
            entry_point="metarim.envs:MetarimEnv",
            kwargs={"level_id": level_id},
        )


_register()
