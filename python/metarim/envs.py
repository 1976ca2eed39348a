"""``MetarimEnv``: one metarim level as a gymnasium environment, minigrid's drop-in."""

from __future__ import annotations

import os
import string
from enum import IntEnum
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import _metarim

#: Characters a mission may contain (every registered level's missions use a subset).
MISSION_CHARSET = string.ascii_letters + string.digits + " ,'"
#: Longest mission a level writes (core's ``MAX_MISSION_LEN``).
MAX_MISSION_LEN = 256


def done_actions_from_environment() -> bool:
    """BabyAI's done-action rules as minigrid decides them: on when the environment variable
    ``BABYAI_DONE_ACTIONS`` is set to any non-empty value (``"0"`` included, as minigrid takes
    it). minigrid reads it once, when its BabyAI verifier is imported; metarim reads it when an
    environment is made, unless ``done_actions`` is given."""
    return bool(os.environ.get("BABYAI_DONE_ACTIONS", False))


class Actions(IntEnum):
    """minigrid's actions, with its numbering."""

    left = 0
    right = 1
    forward = 2
    pickup = 3
    drop = 4
    toggle = 5
    done = 6


def mission_space() -> spaces.Text:
    """The mission's space: text of minigrid's mission characters."""
    return spaces.Text(max_length=MAX_MISSION_LEN, min_length=1, charset=MISSION_CHARSET)


def observation_space() -> spaces.Dict:
    """minigrid's observation space: ``image`` (7, 7, 3) uint8, ``direction``, ``mission``."""
    v = _metarim.VIEW_SIZE
    return spaces.Dict(
        {
            "image": spaces.Box(low=0, high=255, shape=(v, v, 3), dtype=np.uint8),
            "direction": spaces.Discrete(4),
            "mission": mission_space(),
        }
    )


def check_seed(seed: Any) -> int:
    """``seed`` as a non-negative int below 2**64, or a ``ValueError`` naming it."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def _from_env(name: str, doc: str) -> property:
    """A read-only attribute read from the wrapped ``_metarim.Env`` (``self._env``), as
    minigrid exposes it on its env: one definition for every attribute passed through."""
    return property(lambda self: getattr(self._env, name), doc=doc)


class GridView:
    """What minigrid's wrappers read of ``env.grid``: its size and ``encode()``."""

    def __init__(self, env: "_metarim.Env") -> None:
        self._env = env

    width = _from_env("width", "Grid width in cells.")
    height = _from_env("height", "Grid height in cells.")

    def encode(self, vis_mask: np.ndarray | None = None) -> np.ndarray:
        """minigrid's ``Grid.encode``: ``(width, height, 3)`` uint8 codes indexed ``[x, y]``;
        cells outside ``vis_mask`` (when given) are ``(0, 0, 0)``."""
        w, h = self._env.width, self._env.height
        a = np.frombuffer(self._env.grid_encoding(), dtype=np.uint8).reshape(w, h, 3).copy()
        if vis_mask is not None:
            a[~np.asarray(vis_mask, dtype=bool)] = 0
        return a


class MetarimEnv(gym.Env):
    """A metarim level with minigrid's interface (``MiniGridEnv``'s observations, spaces,
    actions, rewards and flags), stepped in Rust.

    ``reset(seed=s)`` generates minigrid's level for ``s``; ``reset()`` continues the same
    generator, as minigrid does. ``render()`` (``render_mode="rgb_array"``) draws minigrid's
    look (same size; drawn without minigrid's supersampling, so pixels can differ at edges).
    ``done_actions``: BabyAI's done-action rules (a BabyAI mission succeeds only by ``done``
    right after the step that completes it; any other ``done`` ends the episode with reward
    0); ``None`` (default) follows ``BABYAI_DONE_ACTIONS`` as minigrid does
    (:func:`done_actions_from_environment`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        level_id: str,
        render_mode: str | None = None,
        tile_size: int = 32,
        highlight: bool = True,
        done_actions: bool | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r}: metarim renders 'rgb_array' (or None)"
            )
        if done_actions is None:
            done_actions = done_actions_from_environment()
        self._env = _metarim.Env(level_id, bool(done_actions))
        self.done_actions = bool(done_actions)
        self.level_id = level_id
        self.render_mode = render_mode
        self.tile_size = tile_size
        self.highlight = highlight
        self.agent_view_size = _metarim.VIEW_SIZE
        self.see_through_walls = False
        self.actions = Actions
        self.action_space = spaces.Discrete(len(Actions))
        self.observation_space = observation_space()
        self._seeded = False

    # -- gymnasium API -----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            seed = check_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            rust_seed: int | None = seed
        elif not self._seeded:
            # minigrid seeds itself from entropy here; draw that seed from gymnasium's
            # generator, itself seeded from entropy.
            rust_seed = int(self.np_random.integers(0, 2**63))
        else:
            rust_seed = None
        image, direction, mission = self._env.reset(rust_seed)
        self._seeded = True
        return self._obs(image, direction, mission), {}

    def step(
        self, action: Any
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        image, direction, mission, reward, terminated, truncated = self._env.step(
            int(action)
        )
        return self._obs(image, direction, mission), reward, terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.get_frame(self.highlight, self.tile_size)
        return None

    # -- minigrid's attributes (its wrappers use them) ----------------------------------------

    def get_frame(
        self, highlight: bool = True, tile_size: int = 32, agent_pov: bool = False
    ) -> np.ndarray:
        """An RGB frame (H, W, 3) uint8: the whole grid, or with ``agent_pov`` the agent's
        7x7 view (what ``RGBImgPartialObsWrapper`` shows)."""
        rgb, h, w = self._env.render(tile_size, highlight, agent_pov)
        return np.frombuffer(rgb, dtype=np.uint8).reshape(h, w, 3).copy()

    def gen_obs(self) -> dict[str, Any]:
        """The current observation (minigrid's ``gen_obs``)."""
        return self._obs(*self._env.observation())

    mission = _from_env("mission", "The episode's mission (str).")
    width = _from_env("width", "Grid width in cells (int).")
    height = _from_env("height", "Grid height in cells (int).")
    agent_pos = _from_env("agent_pos", "The agent's cell ``(x, y)``.")
    agent_dir = _from_env("agent_dir", "The agent's direction (0 right, 1 down, 2 left, 3 up).")
    step_count = _from_env("step_count", "Steps taken in this episode (int).")
    max_steps = _from_env("max_steps", "The level's step limit (int).")

    @property
    def grid(self) -> GridView:
        """The grid as minigrid's wrappers read it (``encode()``, ``width``, ``height``)."""
        return GridView(self._env)

    def mission_tokens(self) -> np.ndarray:
        """The mission's token ids in metarim's vocabulary (``metarim.words()``), int64,
        ``MAX_TOKENS`` long, 0-padded: what the policy reads."""
        return np.asarray(self._env.mission_tokens(), dtype=np.int64)

    def __str__(self) -> str:
        return self._env.ascii()

    def _obs(self, image: bytes, direction: int, mission: str) -> dict[str, Any]:
        v = _metarim.VIEW_SIZE
        return {
            "image": np.frombuffer(image, dtype=np.uint8).reshape(v, v, 3).copy(),
            "direction": direction,
            "mission": mission,
        }
