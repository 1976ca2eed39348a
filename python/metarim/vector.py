"""``make_vec``: many metarim envs stepped together in Rust, as a gymnasium ``VectorEnv``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import _metarim
from .envs import (
    check_seed,
    done_actions_from_environment,
    mission_space,
    observation_space,
)

#: Words of metarim's vocabulary plus padding (0) and unknown (1).
VOCAB_SIZE = len(_metarim.words()) + 2


def _level_id(env_id: str) -> str:
    return env_id[len("metarim/") :] if env_id.startswith("metarim/") else env_id


class MetarimVectorEnv(VectorEnv):
    """``num_envs`` environments of one level, stepped in Rust with the GIL released.

    Semantics are gymnasium 1.x's defaults, as ``SyncVectorEnv`` of minigrid envs gives them:
    next-step autoreset (the step after an episode ends resets that env and returns its first
    observation with reward 0 and both flags false, ignoring its action); ``reset(seed=s)``
    seeds env ``i`` with ``s + i``. Observations are batched: ``image`` (n, 7, 7, 3) uint8,
    ``direction`` (n,) int64, ``mission`` a tuple of n strings and, unless
    ``mission_tokens=False``, ``mission_tokens`` (n, MAX_TOKENS) int64 (metarim's vocabulary,
    ``metarim.words()``). Rewards are float64, flags bool, infos empty. ``done_actions``:
    BabyAI's done-action rules, as for ``MetarimEnv`` (``None``: ``BABYAI_DONE_ACTIONS``).
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        threads: int | None = None,
        render_mode: str | None = None,
        tile_size: int = 32,
        mission_tokens: bool = True,
        done_actions: bool | None = None,
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r}: 'rgb_array' or None")
        self.level_id = _level_id(env_id)
        if done_actions is None:
            done_actions = done_actions_from_environment()
        self.done_actions = bool(done_actions)
        self._vec = _metarim.VecEnv(
            self.level_id, int(num_envs), int(threads or 1), self.done_actions
        )
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.tile_size = tile_size
        self._tokens = mission_tokens
        self._seed = None if seed is None else check_seed(seed)
        self._seeded = False
        single = observation_space()
        if mission_tokens:
            single = spaces.Dict(
                {
                    **single.spaces,
                    "mission_tokens": spaces.Box(
                        0, VOCAB_SIZE - 1, shape=(_metarim.MAX_TOKENS,), dtype=np.int64
                    ),
                }
            )
        self.single_observation_space = single
        self.single_action_space = spaces.Discrete(7)
        self.observation_space = batch_space(single, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        n = self.num_envs
        if seed is None and not self._seeded and self._seed is not None:
            seed = self._seed
        if seed is None:
            if self._seeded:
                seeds: list[int | None] = [None] * n
            else:
                rng = np.random.default_rng()
                seeds = [int(s) for s in rng.integers(0, 2**63, size=n)]
        elif isinstance(seed, (int, np.integer)):
            base = check_seed(seed)
            seeds = [check_seed(base + i) for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"reset: {len(seeds)} seeds for {n} environments")
            seeds = [None if s is None else check_seed(s) for s in seeds]
            if not self._seeded and any(s is None for s in seeds):
                rng = np.random.default_rng()
                seeds = [int(rng.integers(0, 2**63)) if s is None else s for s in seeds]
        packed, missions, tokens = self._vec.reset(seeds)
        self._seeded = True
        self._missions = list(missions)
        self._mission_tokens = (
            np.frombuffer(tokens, dtype="<u2").reshape(n, _metarim.MAX_TOKENS).astype(np.int64)
        )
        return self._unpack(packed)[0], {}

    def step(
        self, actions: Any
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise ValueError(
                f"step: actions of shape {a.shape}, expected ({self.num_envs},)"
            )
        a = a.astype("<i8", copy=False)
        packed, new_missions = self._vec.step(a.tobytes())
        # Missions change only where an env was reset by this step.
        for i, mission, tokens in new_missions:
            self._missions[i] = mission
            self._mission_tokens[i] = tokens
        obs, rewards, terminated, truncated = self._unpack(packed)
        return obs, rewards, terminated, truncated, {}

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        frames = []
        for i in range(self.num_envs):
            rgb, h, w = self._vec.render(i, self.tile_size, True, False)
            frames.append(np.frombuffer(rgb, dtype=np.uint8).reshape(h, w, 3).copy())
        return tuple(frames)

    def _unpack(self, packed: bytes):
        """Observations, rewards, terminated, truncated: views of one fresh copy of the
        extension's packed batch (rewards f64, directions i64, images, two u8 flag rows)."""
        n, v = self.num_envs, _metarim.VIEW_SIZE
        buf = np.frombuffer(packed, dtype=np.uint8).copy()
        img_end = 16 * n + n * v * v * 3
        obs: dict[str, Any] = {
            "image": buf[16 * n : img_end].reshape(n, v, v, 3),
            "direction": buf[8 * n : 16 * n].view("<i8"),
            "mission": tuple(self._missions),
        }
        if self._tokens:
            obs["mission_tokens"] = self._mission_tokens.copy()
        rewards = buf[: 8 * n].view("<f8")
        terminated = buf[img_end : img_end + n].view(np.bool_)
        truncated = buf[img_end + n : img_end + 2 * n].view(np.bool_)
        return obs, rewards, terminated, truncated


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> MetarimVectorEnv:
    """``num_envs`` envs of ``env_id`` (``"BabyAI-GoToLocal-v0"`` or
    ``"metarim/BabyAI-GoToLocal-v0"``) stepped together in Rust.

    ``seed``: used by the first ``reset()`` that gets none (env ``i`` gets ``seed + i``).
    ``threads``: step blocks of envs on this many threads (default 1; worth it from a few
    hundred envs). Other keywords: ``render_mode``, ``tile_size``, ``mission_tokens``,
    ``done_actions``.
    """
    return MetarimVectorEnv(env_id, num_envs, seed=seed, threads=threads, **kwargs)
