"""Type stubs of metarim's Rust extension module (python/src/lib.rs)."""

from typing import Any, Optional, Sequence

MAX_TOKENS: int
VIEW_SIZE: int

def level_ids() -> list[str]:
    """Every registered level id (minigrid's ids), in registration order."""

def words() -> list[str]:
    """The policy's vocabulary: token id ``i + 2`` is ``words()[i]`` (0 pads, 1 is unknown)."""

class Env:
    """One minigrid-exact environment (``metarim.MetarimEnv`` wraps it)."""

    def __init__(self, level_id: str, done_actions: bool = False) -> None: ...
    @property
    def done_actions(self) -> bool: ...
    def reset(self, seed: Optional[int] = None) -> tuple[bytes, int, str]:
        """Reset (a seed restarts the level generator, None continues it); returns
        ``(image bytes (7, 7, 3), direction, mission)``."""
    def step(self, action: int) -> tuple[bytes, int, str, float, bool, bool]:
        """``(image, direction, mission, reward, terminated, truncated)``."""
    def observation(self) -> tuple[bytes, int, str]: ...
    def render(
        self, tile_size: int = 32, highlight: bool = True, agent_pov: bool = False
    ) -> tuple[bytes, int, int]:
        """An RGB frame ``(bytes, height, width)``."""
    def mission_tokens(self) -> list[int]: ...
    def grid_encoding(self) -> bytes:
        """minigrid's ``Grid.encode()`` of the whole grid: ``(width, height, 3)`` uint8 bytes."""
    def ascii(self) -> str: ...
    @property
    def level_id(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def max_steps(self) -> int: ...
    @property
    def step_count(self) -> int: ...
    @property
    def agent_pos(self) -> tuple[int, int]: ...
    @property
    def agent_dir(self) -> int: ...
    @property
    def mission(self) -> str: ...

class VecEnv:
    """``num_envs`` environments stepped together (``metarim.make_vec`` wraps it)."""

    def __init__(
        self, level_id: str, num_envs: int, threads: int = 1, done_actions: bool = False
    ) -> None: ...
    @property
    def num_envs(self) -> int: ...
    def reset(self, seeds: list[Optional[int]]) -> tuple[bytes, list[str], bytes]:
        """``(packed batch, missions, token ids u16)``; the packed batch holds rewards (f64),
        directions (i64), images (n x 7 x 7 x 3 u8), terminated and truncated (u8), in that
        order, little-endian."""
    def step(self, actions: bytes) -> tuple[bytes, list[tuple[int, str, list[int]]]]:
        """``actions``: little-endian int64 bytes; returns ``(packed batch, [(env, mission,
        token ids) of the envs reset by this step])``."""
    def render(
        self, index: int, tile_size: int = 32, highlight: bool = True, agent_pov: bool = False
    ) -> tuple[bytes, int, int]: ...

# -- the policy (python/src/policy.rs; used by metarim.torch and its tests) --------------------

def load_weights(path: str) -> dict[str, Any]:
    """A training checkpoint or a ``metarim export --format torch`` file: ``dims`` (JSON),
    ``mode``, ``config`` (TOML), ``ppo`` ``(clip_eps, value_coef, entropy_coef)`` and
    ``tensors``, a list of ``(name, shape, little-endian f32 bytes)`` in PyTorch's names and
    layouts."""

def create_checkpoint(out_dir: str, settings: Sequence[str] = ..., perturb: float = 0.0) -> str:
    """A freshly initialised model's checkpoint (``metarim train --set`` settings, no frames
    trained), optionally perturbed uniformly by ``perturb``; returns its path."""

def rollout(
    path: str,
    level: str,
    num_envs: int,
    steps: int,
    seed: int = 0,
    max_episode_steps: Optional[int] = None,
) -> dict[str, Any]:
    """The Rust policy acting (actions sampled): time-major bytes of observations, episode
    starts, actions, log-probabilities, logits, values and active modules."""

def evaluate(
    path: str,
    image: bytes,
    mission_tokens: bytes,
    episode_start: bytes,
    steps: int,
    num_envs: int,
) -> dict[str, bytes]:
    """The Rust policy over given time-major observations: ``logits``, ``values``,
    ``active``."""

def ppo_gradient(
    path: str,
    image: bytes,
    mission_tokens: bytes,
    episode_start: bytes,
    actions: bytes,
    old_logprobs: bytes,
    old_values: bytes,
    advantages: bytes,
    returns: bytes,
    init_state: bytes,
    steps: int,
    num_envs: int,
    dtype: str = "f64",
    path_kind: str = "core",
) -> tuple[float, list[tuple[str, list[int], bytes]]]:
    """The Rust gradient of the trainer's PPO loss on recorded chunks (``core``: per-sample
    BPTT in ``dtype``; ``batched``: the trainer's batched pass, f32): ``(mean loss, [(name,
    shape, f64 bytes)])``."""

def export_torch(checkpoint: str, out: str) -> tuple[int, int, int]:
    """``metarim export --format torch``: ``(bytes, tensors, parameters)`` written."""
