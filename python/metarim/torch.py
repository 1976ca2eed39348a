"""The trained metarim policy as a PyTorch module (needs ``torch``; ``import metarim`` does not).

``load_policy`` reads a training checkpoint (``runs/.../checkpoint.safetensors``) or the
weights-only file of ``metarim export --format torch`` and returns a :class:`MetarimPolicy`,
an ``nn.Module`` whose forward gives the Rust policy's action logits and values (python/tests/
test_torch.py checks every mode and model option against the Rust code, to 1e-5 in f32, and its
autograd gradient of the PPO loss against the hand-written Rust backward)::

    import numpy as np
    import torch
    import metarim
    from metarim.torch import load_policy

    policy = load_policy("runs/BabyAI-GoToLocal-v0-meta-rim-seed1/checkpoint.safetensors")
    envs = metarim.make_vec("BabyAI-GoToLocal-v0", num_envs=8, seed=0)
    obs, _ = envs.reset(seed=0)
    state = policy.initial_state(8)
    episode_start = np.ones(8, dtype=bool)     # every observation after reset() starts one
    ended = np.zeros(8, dtype=bool)
    for _ in range(100):
        with torch.no_grad():
            action, logprob, entropy, value, state = policy.get_action_and_value(
                obs, state, episode_start)
        obs, reward, terminated, truncated, _ = envs.step(action.numpy())
        # Next-step autoreset (gymnasium 1.x, metarim.make_vec): the step after an episode
        # ended returns the next episode's first observation.
        episode_start, ended = ended, terminated | truncated

Inputs are the observation dicts of ``metarim.make_vec`` (or of ``gym.make("metarim/...")``
plus ``env.unwrapped.mission_tokens()``): ``image`` ``(..., 7, 7, 3)`` uint8 codes in minigrid's
layout (``image[i, j]`` is view column ``i``, row ``j``) and ``mission_tokens`` ``(...,
MAX_TOKENS)`` int token ids of ``metarim.words()`` (0 pads). The leading dims are ``(B,)`` for
one step or ``(T, B)`` for a sequence. ``episode_start[t, b]`` (the observation at ``t`` is the
first of an episode) resets env ``b``'s memory to zeros before step ``t``; no gradient crosses
it. With same-step autoreset that is CleanRL's ``dones[t]`` (the previous step's ``terminated
| truncated``); with gymnasium 1.x's next-step autoreset (``metarim.make_vec``) the observation
after a step that ended an episode is still that episode's last, and the one after it starts
the next (the example below). Flag the first observation of every episode, whatever the
wrapper: the instruction is read at every step, and a mission that changes without a start
gives other numbers than the Rust agent, which encodes it once per episode.

The recurrent state is one tensor ``(B, state_size)``, as in the Rust code: ``[h | c]`` with
``h`` the memory's output (``n_modules * hidden`` values, module-major: module ``i`` holds
``h[:, i*hidden:(i+1)*hidden]``) and ``c`` the LSTM cell state (present with LSTM module cells
and in ``lstm`` mode).

The network (``core/src/nn``; docs/DESIGN.md, "The RIM cell" and "BabyAI agent and PPO
defaults") and its parameter names, all in PyTorch's layouts (weights ``(out, in)``):

- ``encoder``: ``embedding.weight`` ``(48, bow_dim)`` (``encoder = "bow"`` only: each cell is
  the sum of rows ``type``, ``16 + colour``, ``32 + state``), ``conv1``/``conv2``/``conv3``
  (``nn.Conv2d``, 2x2 kernels; input ``(C, 7_i, 7_j)``): conv1 -> ReLU -> maxpool 2x2 -> conv2
  -> ReLU -> conv3 -> ReLU. With FiLM, ``film`` (``nn.Linear(instr_hidden, 2 * (C0 + C1 +
  C2))``, rows ``[gamma1 C0 | beta1 C0 | gamma2 C1 | beta2 C1 | gamma3 C2 | beta3 C2]``)
  modulates each conv's output ``z`` to ``z * (1 + gamma) + beta`` before its ReLU. With
  ``feature_norm``, the final features are layer-normalised (no scale or shift, eps 1e-5).
- ``instr``: ``embedding`` (``nn.Embedding(VOCAB, word_dim)``) and ``gru`` (``nn.GRU``); the
  instruction embedding is the GRU's last state over the mission's non-padding tokens.
- Memory input ``x = [encoder features ; instruction embedding]``.
- ``rim`` (meta-rim, joint, reversed): ``input_attention.key.weight`` ``(heads*d_k, input)``,
  ``input_attention.value.weight`` ``(heads*d_v, input)``, ``input_attention.query.weight``
  ``(N, heads*d_k, hidden)`` (one query projection per module, of its state); the attention of
  module ``i`` on the input row is ``sigmoid(q_i . k / sqrt(d_k))`` (a softmax over
  ``[null row ; input]``, the null row's key and value being zero); the ``k_active`` modules
  with the least attention on the null row (ties: lower index) are active.
  ``rnn.weight_ih`` ``(N, G*hidden, heads*d_v)``, ``rnn.weight_hh`` ``(N, G*hidden, hidden)``,
  ``rnn.bias_ih``, ``rnn.bias_hh`` ``(N, G*hidden)``: each module's own GRU (G = 3, gates r, z,
  n) or LSTM (G = 4, gates i, f, g, o) cell, PyTorch's equations. Communication (when on):
  ``communication.{query,key,value}.weight`` ``(N, c_heads*c_k, hidden)`` per module,
  multi-head attention of each module over all modules' new states,
  ``h' = h~ + sigmoid(gate o) * tanh(output o)`` with ``communication.{gate,output}.weight``
  ``(N, hidden, c_heads*c_k)`` (with ``comm_update = "interpolate"`` in the metadata instead
  ``h' = h~ + sigmoid(gate o) * (tanh(output o) - h~)``). Inactive modules keep their state; the gradient does not reach
  an inactive module through its use as a communication key/value (the RIMs code's
  ``blocked_grad``, the Rust trainer's ``CommGrad::Blocked``).
- ``lstm`` (lstm mode): ``nn.LSTMCell(input, n_modules * hidden)``.
- ``actor``, ``critic``: ``nn.Sequential(Linear, Tanh, Linear)`` (``actor.0.weight``, ...).

:func:`ppo_loss` is the trainer's PPO loss (BabyAI's: clipped ratio and value, entropy bonus).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _metarim

__all__ = ["MetarimPolicy", "load_policy", "ppo_loss"]

#: Rows per attribute of the bag-of-words table (type, colour and state values are below it).
BOW_MAX_VALUE = 16


class _PerModule(nn.Module):
    """One bias-free linear map per RIM module: ``weight`` ``(N, out, in)``; input ``(B, N, in)``."""

    def __init__(self, n: int, n_out: int, n_in: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, n_out, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("noi,bni->bno", self.weight, x)


class _ModuleCells(nn.Module):
    """Every RIM module's own GRU or LSTM cell, stacked: ``weight_ih`` ``(N, G*H, U)``,
    ``weight_hh`` ``(N, G*H, H)``, ``bias_ih`` and ``bias_hh`` ``(N, G*H)``."""

    def __init__(self, n: int, cell: str, n_in: int, hidden: int) -> None:
        super().__init__()
        g = 3 if cell == "gru" else 4
        self.cell = cell
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.zeros(n, g * hidden, n_in))
        self.weight_hh = nn.Parameter(torch.zeros(n, g * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.zeros(n, g * hidden))
        self.bias_hh = nn.Parameter(torch.zeros(n, g * hidden))

    def forward(
        self, u: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        gi = torch.einsum("ngu,bnu->bng", self.weight_ih, u) + self.bias_ih
        gh = torch.einsum("ngh,bnh->bng", self.weight_hh, h) + self.bias_hh
        hd = self.hidden
        if self.cell == "gru":
            r = torch.sigmoid(gi[..., :hd] + gh[..., :hd])
            z = torch.sigmoid(gi[..., hd : 2 * hd] + gh[..., hd : 2 * hd])
            n = torch.tanh(gi[..., 2 * hd :] + r * gh[..., 2 * hd :])
            return (1 - z) * n + z * h, None
        a = gi + gh
        i = torch.sigmoid(a[..., :hd])
        f = torch.sigmoid(a[..., hd : 2 * hd])
        g = torch.tanh(a[..., 2 * hd : 3 * hd])
        o = torch.sigmoid(a[..., 3 * hd :])
        c_new = f * c + i * g
        return o * torch.tanh(c_new), c_new


def _tensor(x: Any, device: Any) -> torch.Tensor:
    """``x`` (a tensor, numpy array or nested list) as a tensor on ``device``."""
    if torch.is_tensor(x):
        return x.to(device)
    return torch.as_tensor(np.array(x), device=device)


def _select_top_k(null: torch.Tensor, k: int) -> torch.Tensor:
    """The Rust ``select_top_k``: the ``k`` modules with the least null attention, ties to the
    lower index, NaN after every number. ``null`` ``(B, N)``; returns a bool mask ``(B, N)``."""
    null = null.detach()
    n = null.shape[-1]
    vi = null[:, :, None]
    vj = null[:, None, :]

    def ranks_before(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        an, bn = torch.isnan(a), torch.isnan(b)
        return (~an & ~bn & (a < b)) | (~an & bn)

    idx = torch.arange(n, device=null.device)
    lower = (idx[None, :] < idx[:, None])[None]  # [i, j]: j < i
    beats = ranks_before(vj, vi) | (lower & ~ranks_before(vi, vj))
    return beats.sum(-1) < k


class MetarimPolicy(nn.Module):
    """The metarim policy: encoder (FiLM optional) + instruction GRU -> RIM or LSTM memory ->
    actor and critic. Build it with :func:`load_policy`; the module docstring lists the
    parameters. ``dims`` are the Rust ``ModelDims`` (``dims_json``), ``mode`` the training mode.
    """

    def __init__(self, dims: Mapping[str, Any], mode: str, config: str = "",
                 ppo: Tuple[float, float, float] = (0.2, 0.5, 0.01)) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.mode = mode
        #: The training config (TOML) the weights came with.
        self.config = config
        #: ``(clip_eps, value_coef, entropy_coef)`` of the training config.
        self.ppo_coefs = tuple(ppo)
        d = self.dims
        c0, c1, c2 = d["conv_channels"]
        self.bow = d["encoder"] == "bow"
        self.film = bool(d["film"])
        # Files exported before the option have no key: their features are not normalised.
        self.feature_norm = bool(d.get("feature_norm", False))
        cin = d["bow_dim"] if self.bow else 3
        enc = nn.Module()
        if self.bow:
            enc.embedding = nn.Embedding(d["bow_rows"], d["bow_dim"])
        enc.conv1 = nn.Conv2d(cin, c0, 2)
        enc.conv2 = nn.Conv2d(c0, c1, 2)
        enc.conv3 = nn.Conv2d(c1, c2, 2)
        if self.film:
            enc.film = nn.Linear(d["instr_hidden"], 2 * (c0 + c1 + c2))
        self.encoder = enc
        instr = nn.Module()
        instr.embedding = nn.Embedding(d["vocab_size"], d["word_dim"])
        instr.gru = nn.GRU(d["word_dim"], d["instr_hidden"], batch_first=True)
        self.instr = instr
        self.n_modules = d["n_modules"]
        self.hidden = d["hidden"]
        self.width = d["n_modules"] * d["hidden"]
        self.is_rim = d["memory"] == "rim"
        self.has_cell = (not self.is_rim) or d["cell"] == "lstm"
        if self.is_rim:
            n, hid = d["n_modules"], d["hidden"]
            heads, dk, dv = d["in_heads"], d["d_k"], d["d_v"]
            rim = nn.Module()
            ia = nn.Module()
            ia.key = nn.Linear(d["input"], heads * dk, bias=False)
            ia.value = nn.Linear(d["input"], heads * dv, bias=False)
            ia.query = _PerModule(n, heads * dk, hid)
            rim.input_attention = ia
            rim.rnn = _ModuleCells(n, d["cell"], heads * dv, hid)
            if d["communication"]:
                cw = d["c_heads"] * d["c_k"]
                comm = nn.Module()
                comm.query = _PerModule(n, cw, hid)
                comm.key = _PerModule(n, cw, hid)
                comm.value = _PerModule(n, cw, hid)
                comm.gate = _PerModule(n, hid, cw)
                comm.output = _PerModule(n, hid, cw)
                rim.communication = comm
            self.rim = rim
        else:
            self.lstm = nn.LSTMCell(d["input"], self.width)
        hh = d["head_hidden"]
        self.actor = nn.Sequential(nn.Linear(self.width, hh), nn.Tanh(),
                                   nn.Linear(hh, d["n_actions"]))
        self.critic = nn.Sequential(nn.Linear(self.width, hh), nn.Tanh(), nn.Linear(hh, 1))

    @property
    def state_size(self) -> int:
        """Width of the recurrent state: ``n_modules * hidden``, twice that with a cell state."""
        return 2 * self.width if self.has_cell else self.width

    def _dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def initial_state(self, batch: int, device: Any = None,
                      dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The memory state at an episode start: zeros ``(batch, state_size)``."""
        w = self.encoder.conv1.weight
        return torch.zeros(batch, self.state_size, device=device or w.device,
                           dtype=dtype or w.dtype)

    # -- blocks ------------------------------------------------------------------------------

    def encode_instruction(self, tokens: torch.Tensor) -> torch.Tensor:
        """Instruction embeddings ``(N, instr_hidden)`` of missions ``(N, L)`` (token ids, 0
        pads): the GRU's state after the non-padding tokens in order (zeros for none)."""
        tokens = torch.as_tensor(tokens, device=self.instr.embedding.weight.device).long()
        vocab = self.dims["vocab_size"]
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"mission token ids must be in [0, {vocab})")
        present = tokens != 0
        lengths = present.sum(1)
        if lengths.numel() and int(lengths.max()) > self.dims["max_tokens"]:
            raise ValueError(f"missions longer than {self.dims['max_tokens']} tokens")
        # The non-padding tokens first, in order (the GRU reads them; what follows is unused).
        order = torch.sort((~present).to(torch.int8), dim=1, stable=True).indices
        compact = torch.gather(tokens, 1, order)
        out, _ = self.instr.gru(self.instr.embedding(compact))
        last = out[torch.arange(out.shape[0], device=out.device), (lengths - 1).clamp(min=0)]
        return torch.where((lengths > 0)[:, None], last, torch.zeros_like(last))

    def encode_observation(self, image: torch.Tensor, instr: torch.Tensor) -> torch.Tensor:
        """Observation features ``(N, C2)`` of images ``(N, 7, 7, 3)`` (minigrid's codes), FiLM-
        conditioned on the instruction embeddings ``instr`` ``(N, instr_hidden)`` when on."""
        enc = self.encoder
        image = torch.as_tensor(image, device=enc.conv1.weight.device).long()
        if self.bow:
            if image.numel() and (int(image.min()) < 0 or int(image.max()) >= BOW_MAX_VALUE):
                raise ValueError(f"bag-of-words cell codes must be in [0, {BOW_MAX_VALUE})")
            offsets = torch.arange(3, device=image.device) * BOW_MAX_VALUE
            x = enc.embedding(image + offsets).sum(-2)
        else:
            x = image.to(self._dtype())
        x = x.permute(0, 3, 1, 2)
        if self.film:
            c0, c1, c2 = self.dims["conv_channels"]
            gb = enc.film(instr)
            g1, b1, g2, b2, g3, b3 = torch.split(gb, [c0, c0, c1, c1, c2, c2], dim=1)

            def mod(z: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return z * (1 + g[:, :, None, None]) + b[:, :, None, None]
        else:

            def mod(z: torch.Tensor, g: Any, b: Any) -> torch.Tensor:
                return z

            g1 = b1 = g2 = b2 = g3 = b3 = None
        z = mod(enc.conv1(x), g1, b1)
        z = F.max_pool2d(F.relu(z), 2)
        z = F.relu(mod(enc.conv2(z), g2, b2))
        z = F.relu(mod(enc.conv3(z), g3, b3)).flatten(1)
        if self.feature_norm:
            z = F.layer_norm(z, z.shape[1:], eps=1e-5)
        return z

    def memory_step(self, x: torch.Tensor, state: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One memory step from inputs ``x`` ``(B, input)`` and ``state`` ``(B, state_size)``:
        ``(h, new_state, active)``, ``h`` ``(B, n_modules * hidden)`` what the heads read,
        ``active`` ``(B, n_modules)`` the modules selected (all False in lstm mode)."""
        b, w = x.shape[0], self.width
        h = state[:, :w]
        c = state[:, w:] if self.has_cell else None
        if not self.is_rim:
            h2, c2 = self.lstm(x, (h, c))
            none = torch.zeros(b, self.n_modules, dtype=torch.bool, device=x.device)
            return h2, torch.cat([h2, c2], 1), none
        d = self.dims
        n, hid = self.n_modules, self.hidden
        heads, dk, dv = d["in_heads"], d["d_k"], d["d_v"]
        hm = h.reshape(b, n, hid)
        cm = c.reshape(b, n, hid) if c is not None else None
        ia = self.rim.input_attention
        k = ia.key(x).reshape(b, 1, heads, dk)
        v = ia.value(x).reshape(b, 1, heads, dv)
        q = ia.query(hm).reshape(b, n, heads, dk)
        s = (q * k).sum(-1) / math.sqrt(dk)
        a = torch.sigmoid(s)
        null = torch.sigmoid(-s).sum(-1) * (1.0 / heads)
        active = _select_top_k(null, d["k_active"])
        u = (a[..., None] * v).reshape(b, n, heads * dv)
        ht, ct = self.rim.rnn(u, hm, cm)
        if d["communication"]:
            comm = self.rim.communication
            ch, ck = d["c_heads"], d["c_k"]
            # blocked_grad: an inactive module's h~ is read as key/value without gradient.
            kv_in = torch.where(active[..., None], ht, ht.detach())
            keys = comm.key(kv_in).reshape(b, n, ch, ck)
            values = comm.value(kv_in).reshape(b, n, ch, ck)
            queries = comm.query(ht).reshape(b, n, ch, ck)
            scores = torch.einsum("bihd,bmhd->bihm", queries, keys) / math.sqrt(ck)
            p = torch.softmax(scores, dim=-1)
            o = torch.einsum("bihm,bmhd->bihd", p, values).reshape(b, n, ch * ck)
            g, up = torch.sigmoid(comm.gate(o)), torch.tanh(comm.output(o))
            if d.get("comm_update", "residual") == "interpolate":
                ht = ht + g * (up - ht)
            else:
                ht = ht + g * up
        m = active[..., None]
        h_new = torch.where(m, ht, hm).reshape(b, w)
        if cm is None:
            return h_new, h_new, active
        c_new = torch.where(m, ct, cm).reshape(b, w)
        return h_new, torch.cat([h_new, c_new], 1), active

    def heads(self, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Action logits ``(B, n_actions)`` and values ``(B,)`` of memory outputs ``h``."""
        return self.actor(h), self.critic(h).squeeze(-1)

    # -- the policy --------------------------------------------------------------------------

    def forward(self, obs: Mapping[str, Any], state: Optional[torch.Tensor] = None,
                episode_start: Optional[Any] = None, return_active: bool = False):
        """Logits, values and the next state over one step or a sequence.

        ``obs``: a dict with ``image`` ``(B, 7, 7, 3)`` or ``(T, B, 7, 7, 3)`` and
        ``mission_tokens`` ``(B, L)`` or ``(T, B, L)`` (numpy arrays or tensors).
        ``state``: ``(B, state_size)`` before the first step (``None``: zeros).
        ``episode_start``: ``(B,)`` or ``(T, B)`` bools; where true the memory is reset to zeros
        before that step (``None``: no reset).

        Returns ``(logits, values, state)``: ``(B, A)``, ``(B,)`` for one step, ``(T, B, A)``,
        ``(T, B)`` for a sequence, and the state after the last step; with ``return_active``
        also the selected RIM modules, ``(B, N)`` or ``(T, B, N)`` bools.
        """
        dev = self.encoder.conv1.weight.device
        image = _tensor(obs["image"], dev)
        tokens = _tensor(obs["mission_tokens"], dev).long()
        single = image.dim() == 4
        if single:
            image, tokens = image[None], tokens[None]
        if image.dim() != 5 or image.shape[-3:] != (7, 7, 3):
            raise ValueError(f"obs['image'] must be (B, 7, 7, 3) or (T, B, 7, 7, 3), got "
                             f"{tuple(image.shape)}")
        t_len, b = image.shape[:2]
        if tokens.shape[:2] != (t_len, b) or tokens.dim() != 3:
            raise ValueError(f"obs['mission_tokens'] must be ({'' if single else 'T, '}B, L) "
                             f"matching the image, got {tuple(tokens.shape)}")
        if episode_start is None:
            starts = torch.zeros(t_len, b, dtype=torch.bool, device=dev)
        else:
            starts = _tensor(episode_start, dev).bool()
            if single:
                starts = starts[None]
            if tuple(starts.shape) != (t_len, b):
                raise ValueError(f"episode_start must be shaped like the batch "
                                 f"{(b,) if single else (t_len, b)}, got {tuple(starts.shape)}")
        if state is None:
            state = self.initial_state(b, device=dev)
        if tuple(state.shape) != (b, self.state_size):
            raise ValueError(f"state must be ({b}, {self.state_size}), got {tuple(state.shape)}")
        flat_tokens = tokens.reshape(t_len * b, -1)
        instr = self.encode_instruction(flat_tokens)
        feats = self.encode_observation(image.reshape(t_len * b, 7, 7, 3), instr)
        xs = torch.cat([feats, instr], 1).reshape(t_len, b, -1)
        outs, actives = [], []
        for t in range(t_len):
            state = torch.where(starts[t][:, None], torch.zeros_like(state), state)
            h, state, active = self.memory_step(xs[t], state)
            outs.append(h)
            actives.append(active)
        hs = torch.stack(outs)
        logits, values = self.heads(hs.reshape(t_len * b, -1))
        logits = logits.reshape(t_len, b, -1)
        values = values.reshape(t_len, b)
        active = torch.stack(actives)
        if single:
            logits, values, active = logits[0], values[0], active[0]
        if return_active:
            return logits, values, state, active
        return logits, values, state

    def get_action_and_value(self, obs: Mapping[str, Any], state: Optional[torch.Tensor] = None,
                             episode_start: Optional[Any] = None,
                             action: Optional[torch.Tensor] = None):
        """CleanRL's interface: ``(action, logprob, entropy, value, state)``, the action
        sampled from the logits unless given."""
        logits, value, state = self(obs, state, episode_start)
        dist = torch.distributions.Categorical(logits=logits)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), value, state


def ppo_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor,
             old_logprobs: torch.Tensor, old_values: torch.Tensor, advantages: torch.Tensor,
             returns: torch.Tensor, clip_eps: float = 0.2, value_coef: float = 0.5,
             entropy_coef: float = 0.01) -> torch.Tensor:
    """The Rust trainer's PPO loss (``core/src/nn/loss.rs``, BabyAI's), averaged over every
    step: ``-min(r A, clip(r, 1-eps, 1+eps) A) - entropy_coef * H + value_coef * max((v -
    R)^2, (old_v + clip(v - old_v, -eps, eps) - R)^2)`` with ``r = exp(logp - old_logp)``."""
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.long()[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    ratio = torch.exp(logp - old_logprobs)
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    policy = -torch.minimum(surr1, surr2)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    value = torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    return (policy - entropy_coef * entropy + value_coef * value).mean()


def load_policy(path: str, map_location: Any = None) -> MetarimPolicy:
    """A :class:`MetarimPolicy` with the weights of ``path``: a training checkpoint or a
    ``metarim export --format torch`` file (f32, in eval mode; ``.double()`` for f64).

    Raises ``ValueError`` naming the problem for a missing or unreadable file, or one that is
    neither kind."""
    w = _metarim.load_weights(str(path))
    policy = MetarimPolicy(json.loads(w["dims"]), w["mode"], w["config"], w["ppo"])
    state = {}
    for name, shape, data in w["tensors"]:
        arr = np.frombuffer(data, dtype="<f4").reshape(shape)
        state[name] = torch.from_numpy(arr.copy())
    policy.load_state_dict(state, strict=True)
    if map_location is not None:
        policy.to(map_location)
    return policy.eval()
