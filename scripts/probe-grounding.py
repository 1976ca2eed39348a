#!/usr/bin/env python3
"""Where does a policy lose its mission? Probes of PyTorch exports on fresh episodes.

For each `metarim export --format torch` file (or training checkpoint), over sampled play on
fresh episodes of a level (`metarim.make_vec`), prints one line with:

- `features`, `key`: median norms of the encoder's output features and of the RIM input
  attention's key of the memory input `[features ; instruction]`;
- `weight`: each module's mean attention weight on the input (the sigmoid of its query against
  the input's key) and `selected`: how often each module is among the k active;
- `selected_weight`: the mean input weight of the selected modules;
- `instr_share`: the instruction's share of the input value `W_v x` (norm of the instruction
  columns' part over the sum of both parts' norms);
- `policy_change`: total variation between the action distributions of one step with the
  episode's own instruction embedding and with another episode's (same state and observation);
  near 0 for a policy that ignores its mission.

LSTM-memory policies print only the encoder and policy figures. docs/RESULTS.md ("Why seed 2 does
not read") has the figures of the Paper runs.

usage: python scripts/probe-grounding.py MODEL [MODEL ...] [--level ID] [--envs N] [--steps T]
needs: the metarim Python package with torch (bash scripts/python-env.sh)
"""
import argparse
import math
import sys

import numpy as np
import torch

import metarim
from metarim.torch import load_policy


def probe(path, level, n_envs, steps, seed):
    """The figures of one model (a dict of name -> value or list)."""
    pol = load_policy(path).eval()
    envs = metarim.make_vec(level, n_envs, seed=seed)
    obs, _ = envs.reset()
    state = pol.initial_state(n_envs)
    start = np.ones(n_envs, dtype=bool)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    feat, key, change, share = [], [], [], []
    weight_sum, selected_sum, sel_weight = None, None, []
    for _ in range(steps):
        image = torch.as_tensor(obs["image"]).long()
        tokens = torch.as_tensor(obs["mission_tokens"]).long()
        other = torch.as_tensor(rng.permutation(n_envs))
        with torch.no_grad():
            state = torch.where(torch.as_tensor(start)[:, None], torch.zeros_like(state), state)
            instr = pol.encode_instruction(tokens)
            f = pol.encode_observation(image, instr)
            f_other = pol.encode_observation(image, instr[other])
            x = torch.cat([f, instr], 1)
            x_other = torch.cat([f_other, instr[other]], 1)
            feat.append(f.norm(dim=1).median().item())
            h, next_state, active = pol.memory_step(x, state)
            h_other, _, _ = pol.memory_step(x_other, state)
            logits, _ = pol.heads(h)
            logits_other, _ = pol.heads(h_other)
            p, q = torch.softmax(logits, 1), torch.softmax(logits_other, 1)
            change.append(0.5 * (p - q).abs().sum(1).mean().item())
            if pol.is_rim:
                n, hid = pol.n_modules, pol.hidden
                heads, dk = pol.dims["in_heads"], pol.dims["d_k"]
                ia = pol.rim.input_attention
                hm = state[:, : pol.width].reshape(n_envs, n, hid)
                k = ia.key(x).reshape(n_envs, 1, heads, dk)
                qm = ia.query(hm).reshape(n_envs, n, heads, dk)
                a = torch.sigmoid((qm * k).sum(-1) / math.sqrt(dk)).mean(-1)
                key.append(k.norm(dim=-1).median().item())
                weight_sum = a.sum(0) if weight_sum is None else weight_sum + a.sum(0)
                sel = active.float()
                selected_sum = sel.sum(0) if selected_sum is None else selected_sum + sel.sum(0)
                sel_weight.append(a[active].mean().item())
                w = ia.value.weight
                c2 = f.shape[1]
                vf = (f @ w[:, :c2].T).norm(dim=1)
                vi = (instr @ w[:, c2:].T).norm(dim=1)
                share.append((vi / (vf + vi + 1e-12)).mean().item())
            state = next_state
            action = torch.multinomial(p, 1, generator=gen)[:, 0]
        obs, _, terminated, truncated, _ = envs.step(action.numpy())
        start = terminated | truncated
    out = {"features": float(np.median(feat)), "policy_change": float(np.mean(change))}
    if pol.is_rim:
        frames = n_envs * steps
        out.update(
            key=float(np.median(key)),
            weight=[round(v / frames, 2) for v in weight_sum.tolist()],
            selected=[round(v / frames, 2) for v in selected_sum.tolist()],
            selected_weight=float(np.mean(sel_weight)),
            instr_share=float(np.mean(share)),
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="PyTorch exports or training checkpoints")
    ap.add_argument("--level", default="BabyAI-GoToLocal-v0")
    ap.add_argument("--envs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.envs < 2 or args.steps < 1:
        sys.exit("probe-grounding: --envs must be at least 2 (missions are swapped between "
                 "envs) and --steps at least 1")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small batches: threads only contend (and runs stay repeatable)
    for path in args.models:
        r = probe(path, args.level, args.envs, args.steps, args.seed)
        fields = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()]
        print(path, " ".join(fields), flush=True)


if __name__ == "__main__":
    main()
