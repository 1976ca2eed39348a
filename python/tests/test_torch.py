"""``metarim.torch`` against the Rust policy (issue 18, "the trained policy in PyTorch").

For every mode and every model option a config can select, a checkpoint of a freshly
initialised model (every parameter perturbed, so that the FiLM generator and the biases, which
start at zero, matter) is written by the trainer itself; the Rust policy (core ``Policy::step``,
f32) acts in a few environments with sampled actions and episodes cut short (so that episode
starts fall inside the recording), and:

1. the PyTorch module's logits and values over the recorded episodes equal the Rust ones
   within 1e-5 (f32, max abs difference), and it selects the same RIM modules at every step;
2. PyTorch autograd's gradient of the PPO loss over a recorded chunk (starting mid-episode from
   a carried state, with episode starts inside, targets that put ratios and values on both
   sides of the clip) equals the hand-written Rust BPTT (``Policy::chunk_backward``) in f64
   within 1e-4 relative, normwise per parameter tensor (f64 on both sides, so the comparison
   sees the backward's math, not f32 rounding), and the trainer's batched f32 pass
   (``BatchedGrads::pass``) too.

``METARIM_TORCH_REPORT=path`` appends every measured difference to ``path`` (JSON lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="metarim.torch needs PyTorch (pip install torch); CI installs it"
)

from metarim import _metarim  # noqa: E402
from metarim.torch import load_policy, ppo_loss  # noqa: E402

LEVEL = "BabyAI-GoToLocal-v0"
ENVS = 4
STEPS = 48
EPISODE_CAP = 20
CHUNK_START = 16
PERTURB = 0.05
TOL_FORWARD = 1e-5
TOL_GRAD = 1e-4

# (id, settings): every mode at each preset, and every model option a config selects
# (host/src/train/config.rs: encoder, film, feature_norm, cell, communication, comm_update,
# n_modules, k_active, widths).
CASES = [
    (f"{preset.lower()}-{mode}", [f'preset="{preset}"', f'mode="{mode}"'])
    for preset in ("Tiny", "Small", "Paper")
    for mode in ("meta-rim", "joint", "reversed", "lstm")
] + [
    ("tiny-bow", ['preset="Tiny"', 'encoder="bow"']),
    ("tiny-bow-film", ['preset="Tiny"', 'encoder="bow"', "film=true"]),
    ("tiny-conv-film", ['preset="Tiny"', 'encoder="conv"', "film=true"]),
    ("small-conv-nofilm", ['preset="Small"', 'encoder="conv"', "film=false"]),
    ("tiny-cell-lstm", ['preset="Tiny"', 'cell="lstm"']),
    ("small-cell-lstm-reversed", ['preset="Small"', 'cell="lstm"', 'mode="reversed"']),
    ("paper-cell-lstm-film", ['preset="Paper"', 'cell="lstm"', "film=true"]),
    ("tiny-no-comm", ['preset="Tiny"', "communication=false"]),
    ("tiny-no-comm-cell-lstm", ['preset="Tiny"', "communication=false", 'cell="lstm"']),
    ("small-no-comm-joint", ['preset="Small"', "communication=false", 'mode="joint"']),
    ("tiny-comm-interpolate", ['preset="Tiny"', 'comm_update="interpolate"']),
    (
        "small-comm-interpolate-cell-lstm",
        ['preset="Small"', 'comm_update="interpolate"', 'cell="lstm"'],
    ),
    ("small-feature-norm", ['preset="Small"', "feature_norm=true"]),
    ("tiny-conv-feature-norm-lstm", ['preset="Tiny"', "feature_norm=true", 'mode="lstm"']),
    ("tiny-all-active", ['preset="Tiny"', "k_active=4"]),
    ("tiny-6-modules-k3", ['preset="Tiny"', "n_modules=6", "k_active=3"]),
    ("tiny-one-active", ['preset="Tiny"', "k_active=1"]),
    (
        "tiny-widths",
        [
            'preset="Tiny"',
            'encoder="bow"',
            "film=true",
            "rim_hidden=12",
            "conv_channels=[4, 8, 12]",
            "bow_dim=5",
            "word_dim=8",
            "instr_hidden=12",
            "head_hidden=10",
        ],
    ),
    ("lstm-mode-bow-film", ['preset="Tiny"', 'mode="lstm"', 'encoder="bow"', "film=true"]),
]


def _report(record: dict) -> None:
    path = os.environ.get("METARIM_TORCH_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


class Recording:
    """A Rust rollout as numpy arrays, time-major (T, B, ...)."""

    def __init__(self, r: dict) -> None:
        t, b, a, n = r["steps"], r["num_envs"], r["n_actions"], r["n_modules"]
        self.steps, self.envs, self.state_len = t, b, r["state_len"]
        self.image = np.frombuffer(r["image"], np.uint8).reshape(t, b, 7, 7, 3).copy()
        self.tokens = np.frombuffer(r["mission_tokens"], "<u2").reshape(t, b, -1).copy()
        self.start = np.frombuffer(r["episode_start"], np.uint8).reshape(t, b).astype(bool)
        self.actions = np.frombuffer(r["actions"], np.uint8).reshape(t, b).copy()
        self.logprobs = np.frombuffer(r["logprobs"], "<f4").reshape(t, b)
        self.logits = np.frombuffer(r["logits"], "<f4").reshape(t, b, a)
        self.values = np.frombuffer(r["values"], "<f4").reshape(t, b)
        self.active = np.frombuffer(r["active"], np.uint8).reshape(t, b, n).astype(bool)

    def obs(self, sl: slice = slice(None)) -> dict:
        return {"image": self.image[sl], "mission_tokens": self.tokens[sl].astype(np.int64)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The networks here are tiny: with PyTorch's default thread pool on a busy machine the
    threads mostly wait for each other (15x slower on 2 loaded cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoint and recording per case, made once."""
    cache: dict = {}
    base = tmp_path_factory.mktemp("torch")

    def get(case_id: str, settings: list) -> tuple:
        if case_id not in cache:
            ck = _metarim.create_checkpoint(str(base / case_id), settings, PERTURB)
            rec = Recording(_metarim.rollout(ck, LEVEL, ENVS, STEPS, 7, EPISODE_CAP))
            cache[case_id] = (ck, rec)
        return cache[case_id]

    return get


@pytest.mark.parametrize("case_id,settings", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_rust(runs, case_id, settings):
    ck, rec = runs(case_id, settings)
    # Episode starts inside the recording, not only at its first step.
    assert rec.start[1:].any() and rec.start[0].all()
    policy = load_policy(ck)
    with torch.no_grad():
        logits, values, state, active = policy(
            rec.obs(), None, rec.start, return_active=True
        )
    assert logits.dtype == torch.float32
    assert tuple(state.shape) == (ENVS, policy.state_size) == (ENVS, rec.state_len)
    mismatched = int((active.numpy() != rec.active).sum())
    assert mismatched == 0, f"{mismatched} module selections differ from the Rust policy's"
    d_logits = float(np.abs(logits.numpy() - rec.logits).max())
    d_values = float(np.abs(values.numpy() - rec.values).max())
    _report({"test": "forward", "case": case_id, "mode": policy.mode,
             "max_abs_logits": d_logits, "max_abs_values": d_values})
    assert d_logits <= TOL_FORWARD, f"logits differ by {d_logits:.3e}"
    assert d_values <= TOL_FORWARD, f"values differ by {d_values:.3e}"
    # Step by step with the state carried gives the same numbers as the sequence.
    with torch.no_grad():
        st = policy.initial_state(ENVS)
        for t in range(6):
            lg, v, st = policy(rec.obs(t), st, rec.start[t])
            assert torch.equal(lg, logits[t]) or float((lg - logits[t]).abs().max()) <= 1e-6


def _chunk_targets(rec: Recording, values: np.ndarray, logprobs: np.ndarray, seed: int):
    """Old log-probs and values moved off the current ones (ratios and value changes on both
    sides of the clip), advantages and returns."""
    rng = np.random.default_rng(seed)
    shape = logprobs.shape
    old_lp = logprobs + rng.normal(0.0, 0.25, shape)
    old_v = values + rng.normal(0.0, 0.25, shape)
    adv = rng.normal(0.0, 1.0, shape)
    ret = old_v + rng.normal(0.0, 1.0, shape)
    return old_lp, old_v, adv, ret


def _grad_check(ck: str, rec: Recording, dtype: str, path_kind: str, case_id: str):
    """Torch f64 autograd vs the Rust gradient over the chunk [CHUNK_START, STEPS) from the
    state the policy carries into it; returns the worst normwise relative error."""
    policy = load_policy(ck).double()
    sl = slice(CHUNK_START, STEPS)
    with torch.no_grad():
        _, _, init = policy(rec.obs(slice(0, CHUNK_START)), None, rec.start[:CHUNK_START])
    starts = rec.start[sl]
    assert not starts[0].any() and starts[1:].any(), "chunk must start mid-episode"
    t_len = STEPS - CHUNK_START
    logits, values, _ = policy(rec.obs(sl), init.clone(), starts)
    logp = torch.log_softmax(logits, -1).gather(
        -1, torch.as_tensor(rec.actions[sl]).long()[..., None]).squeeze(-1)
    old_lp, old_v, adv, ret = _chunk_targets(
        rec, values.detach().numpy(), logp.detach().numpy(), seed=3)
    clip = policy.ppo_coefs[0]
    ratio = np.exp(logp.detach().numpy() - old_lp)
    assert (np.abs(ratio - 1) > clip).any() and (np.abs(ratio - 1) < clip).any()
    loss = ppo_loss(logits, values, torch.as_tensor(rec.actions[sl]), torch.as_tensor(old_lp),
                    torch.as_tensor(old_v), torch.as_tensor(adv), torch.as_tensor(ret),
                    *policy.ppo_coefs)
    loss.backward()
    rust_loss, tensors = _metarim.ppo_gradient(
        ck,
        np.ascontiguousarray(rec.image[sl]).tobytes(),
        np.ascontiguousarray(rec.tokens[sl]).tobytes(),
        starts.astype(np.uint8).tobytes(),
        np.ascontiguousarray(rec.actions[sl]).tobytes(),
        old_lp.tobytes(), old_v.tobytes(), adv.tobytes(), ret.tobytes(),
        init.numpy().astype(np.float64).tobytes(),
        t_len, ENVS, dtype, path_kind,
    )
    assert abs(rust_loss - loss.item()) <= 1e-6 * max(1.0, abs(loss.item()))
    params = dict(policy.named_parameters())
    assert sorted(n for n, _, _ in tensors) == sorted(params)
    worst, worst_name, zero = 0.0, "", []
    for name, shape, data in tensors:
        g_rust = np.frombuffer(data, "<f8").reshape(shape)
        p = params[name]
        g_torch = p.grad.numpy() if p.grad is not None else np.zeros(shape)
        norm = float(np.linalg.norm(g_rust))
        err = float(np.linalg.norm(g_torch - g_rust))
        if norm == 0.0:
            # A tensor with no gradient (e.g. inactive modules only) must have none in torch.
            zero.append(name)
            assert err == 0.0, f"{name}: Rust gradient is zero, torch's has norm {err:.3e}"
            continue
        rel = err / norm
        if rel > worst:
            worst, worst_name = rel, name
    _report({"test": "gradient", "case": case_id, "mode": policy.mode, "dtype": dtype,
             "path": path_kind, "worst_rel": worst, "worst_tensor": worst_name,
             "zero_tensors": zero})
    return worst, worst_name


@pytest.mark.parametrize("case_id,settings", CASES, ids=[c[0] for c in CASES])
def test_ppo_gradient_matches_rust_backward(runs, case_id, settings):
    ck, rec = runs(case_id, settings)
    worst, name = _grad_check(ck, rec, "f64", "core", case_id)
    assert worst <= TOL_GRAD, f"{name}: ||g_torch - g_rust|| / ||g_rust|| = {worst:.3e}"


BATCHED = ["tiny-meta-rim", "small-meta-rim", "paper-meta-rim", "tiny-lstm", "small-lstm",
           "tiny-cell-lstm", "tiny-no-comm", "tiny-bow", "small-reversed", "paper-joint"]


@pytest.mark.parametrize("case_id", BATCHED)
@pytest.mark.parametrize("dtype,path_kind", [("f32", "batched"), ("f32", "core")])
def test_f32_gradients_match_autograd(runs, case_id, dtype, path_kind):
    """The trainer's f32 gradient paths (the batched pass it trains with, and the core's f32
    BPTT) against torch's f64 autograd at the same f32 parameters."""
    settings = dict(CASES)[case_id]
    ck, rec = runs(case_id, settings)
    worst, name = _grad_check(ck, rec, dtype, path_kind, case_id)
    assert worst <= TOL_GRAD, f"{name}: ||g_torch - g_rust|| / ||g_rust|| = {worst:.3e}"


def test_acting_in_gymnasium_vector_envs(runs):
    """The documented CleanRL loop: the module acts on ``metarim.make_vec``'s observations;
    the Rust policy over the same observations (``evaluate``) gives the same numbers, so the
    image and token layouts are the environments' own."""
    import metarim

    ck, _ = runs("small-meta-rim", dict(CASES)["small-meta-rim"])
    policy = load_policy(ck)
    envs = metarim.make_vec("BabyAI-GoToLocalS6N2-v0", num_envs=3, seed=5)
    obs, _ = envs.reset(seed=5)
    state = policy.initial_state(3)
    start, ended = np.ones(3, dtype=bool), np.zeros(3, dtype=bool)
    images, tokens, starts, logits, values = [], [], [], [], []
    torch.manual_seed(0)
    for _ in range(40):
        images.append(obs["image"].copy())
        tokens.append(obs["mission_tokens"].copy())
        starts.append(start.copy())
        with torch.no_grad():
            lg, v, state = policy(obs, state, start)
        logits.append(lg.numpy())
        values.append(v.numpy())
        action = torch.distributions.Categorical(logits=lg).sample().numpy()
        obs, _, terminated, truncated, _ = envs.step(action)
        # Next-step autoreset: the observation after an episode's end starts the next one.
        start, ended = ended, terminated | truncated
    image = np.stack(images)
    assert np.stack(starts)[1:].any(), "no episode ended: make the recording longer"
    r = _metarim.evaluate(ck, image.tobytes(), np.stack(tokens).astype("<u2").tobytes(),
                          np.stack(starts).astype(np.uint8).tobytes(), 40, 3)
    rust_logits = np.frombuffer(r["logits"], "<f4").reshape(40, 3, -1)
    rust_values = np.frombuffer(r["values"], "<f4").reshape(40, 3)
    assert float(np.abs(np.stack(logits) - rust_logits).max()) <= TOL_FORWARD
    assert float(np.abs(np.stack(values) - rust_values).max()) <= TOL_FORWARD
    # The layout matters: the transposed views give other numbers.
    r = _metarim.evaluate(ck, np.ascontiguousarray(image.swapaxes(2, 3)).tobytes(),
                          np.stack(tokens).astype("<u2").tobytes(),
                          np.stack(starts).astype(np.uint8).tobytes(), 40, 3)
    other = np.frombuffer(r["logits"], "<f4").reshape(40, 3, -1)
    assert float(np.abs(np.stack(logits) - other).max()) > 1e-3


def test_unperturbed_initialisation(tmp_path):
    """A checkpoint exactly as the trainer initialises it (FiLM generator at zero)."""
    ck = _metarim.create_checkpoint(str(tmp_path / "run"), ['preset="Small"'], 0.0)
    rec = Recording(_metarim.rollout(ck, LEVEL, 2, 24, 1, 10))
    policy = load_policy(ck)
    assert float(policy.encoder.film.weight.detach().abs().max()) == 0.0
    with torch.no_grad():
        logits, values, _ = policy(rec.obs(), None, rec.start)
    assert float(np.abs(logits.numpy() - rec.logits).max()) <= TOL_FORWARD
    assert float(np.abs(values.numpy() - rec.values).max()) <= TOL_FORWARD


def test_exported_file_loads_like_the_checkpoint(runs, tmp_path):
    ck, rec = runs("small-meta-rim", dict(CASES)["small-meta-rim"])
    out = tmp_path / "policy.safetensors"
    n_bytes, n_tensors, n_params = _metarim.export_torch(ck, str(out))
    assert out.stat().st_size == n_bytes
    a, b = load_policy(ck), load_policy(str(out))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and len(sa) == n_tensors
    assert sum(v.numel() for v in sa.values()) == n_params
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.dims == b.dims and a.mode == b.mode and a.ppo_coefs == b.ppo_coefs
    with torch.no_grad():
        la, va, _ = a(rec.obs(), None, rec.start)
        lb, vb, _ = b(rec.obs(), None, rec.start)
    assert torch.equal(la, lb) and torch.equal(va, vb)
    # Readable without metarim: a plain safetensors file (8-byte header length, JSON header)
    # of f32 tensors with the module's names and shapes, and the dims in its metadata.
    raw = out.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["metarim_torch"])
    assert meta["format_version"] == 1 and meta["dims"] == a.dims and meta["mode"] == a.mode
    assert {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items()} == {
        k: ("F32", tuple(v.shape)) for k, v in sa.items()}
    for k, v in header.items():
        lo, hi = v["data_offsets"]
        arr = np.frombuffer(raw[8 + n + lo:8 + n + hi], "<f4").reshape(v["shape"])
        assert np.array_equal(arr, sa[k].numpy()), k


def test_export_command_line(runs, tmp_path):
    """`metarim export --format torch`, when the binary is built (target/release or PATH)."""
    root = Path(__file__).resolve().parents[2]
    candidates = [root / "target" / "release" / "metarim", root / "target" / "debug" / "metarim"]
    binary = next((c for c in candidates if c.is_file()), None)
    if binary is None:
        pytest.skip("no metarim binary built (cargo build --release -p host)")
    ck, _ = runs("tiny-lstm", dict(CASES)["tiny-lstm"])
    out = tmp_path / "cli.safetensors"
    res = subprocess.run([str(binary), "export", "--format", "torch", "--checkpoint", ck,
                          "--out", str(out)], capture_output=True, text=True)
    if "unexpected argument '--format'" in res.stderr:
        pytest.skip(f"{binary} predates --format torch (rebuild it)")
    assert res.returncode == 0, res.stderr
    assert "format=torch" in res.stdout
    a, b = load_policy(ck), load_policy(str(out))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="reading"):
        load_policy(str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="neither a metarim training checkpoint"):
        load_policy(str(junk))
    with pytest.raises(ValueError, match="key=value"):
        _metarim.create_checkpoint(str(tmp_path / "x"), ["preset"], 0.0)
    with pytest.raises(ValueError, match="unknown config key"):
        _metarim.create_checkpoint(str(tmp_path / "y"), ["no_such_key=1"], 0.0)


def test_bad_inputs_are_clear_errors(runs):
    ck, rec = runs("tiny-meta-rim", dict(CASES)["tiny-meta-rim"])
    policy = load_policy(ck)
    with pytest.raises(ValueError, match="state must be"):
        policy(rec.obs(0), torch.zeros(ENVS, policy.state_size + 1))
    with pytest.raises(ValueError, match="image"):
        policy({"image": rec.image[0, :, :5], "mission_tokens": rec.tokens[0]})
    with pytest.raises(ValueError, match="episode_start"):
        policy(rec.obs(0), None, np.zeros(ENVS + 1, bool))
    with pytest.raises(ValueError, match="rollout|level"):
        _metarim.rollout(ck, "No-Such-Level-v0", 1, 1)
    with pytest.raises(ValueError, match="image"):
        _metarim.ppo_gradient(ck, b"\0", b"", b"", b"", b"", b"", b"", b"", b"", 1, 1)


def test_get_action_and_value_and_import_is_lazy(runs):
    ck, rec = runs("tiny-meta-rim", dict(CASES)["tiny-meta-rim"])
    policy = load_policy(ck)
    torch.manual_seed(0)
    with torch.no_grad():
        a, lp, ent, v, st = policy.get_action_and_value(rec.obs(0), None, rec.start[0])
    assert a.shape == (ENVS,) and lp.shape == (ENVS,) and ent.shape == (ENVS,)
    assert st.shape == (ENVS, policy.state_size)
    code = "import sys, metarim; assert 'torch' not in sys.modules, 'import metarim imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
