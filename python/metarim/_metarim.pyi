"""Type stubs of metarim's Rust extension module (python/src/lib.rs)."""

from typing import Optional

MAX_TOKENS: int
VIEW_SIZE: int

def level_ids() -> list[str]:
    """Every registered level id (minigrid's ids), in registration order."""

def words() -> list[str]:
    """The policy's vocabulary: token id ``i + 2`` is ``words()[i]`` (0 pads, 1 is unknown)."""

class Env:
    """One minigrid-exact environment (``metarim.MetarimEnv`` wraps it)."""

    def __init__(self, level_id: str) -> None: ...
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

    def __init__(self, level_id: str, num_envs: int, threads: int = 1) -> None: ...
    @property
    def num_envs(self) -> int: ...
    def reset(self, seeds: list[Optional[int]]) -> tuple[bytes, bytes, list[str], bytes]:
        """``(images, directions u8, missions, token ids u16)``."""
    def step(
        self, actions: bytes
    ) -> tuple[bytes, bytes, bytes, bytes, bytes, list[tuple[int, str, list[int]]]]:
        """``actions``: little-endian int64 bytes; returns ``(images, directions u8,
        rewards f64, terminated u8, truncated u8, [(env, mission, token ids) of the envs
        reset by this step])``."""
    def render(
        self, index: int, tile_size: int = 32, highlight: bool = True, agent_pov: bool = False
    ) -> tuple[bytes, int, int]: ...
