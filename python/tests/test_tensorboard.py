"""The TensorBoard event files of `metarim train`, read with TensorBoard's own reader.

Acceptance of issue 20: the scalars TensorBoard sees equal the CSV's, and after `kill -9` and
`--resume` no step is duplicated or missing and `wall_s` only grows. Needs the `metarim`
binary: `$METARIM_BIN`, else the newest of target/{release,debug}/metarim (`cargo build -p
host`); CI sets METARIM_BIN, so there a missing binary fails instead of skipping.
"""

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")

ROOT = Path(__file__).resolve().parents[2]


def metarim_binary() -> Path:
    env = os.environ.get("METARIM_BIN")
    if env:
        path = Path(env) if Path(env).is_absolute() else ROOT / env
        assert path.is_file(), f"METARIM_BIN={env} is not a file"
        return path
    found = [p for p in (ROOT / "target" / "release" / "metarim",
                         ROOT / "target" / "debug" / "metarim") if p.is_file()]
    if not found:
        pytest.skip("no metarim binary built (cargo build -p host) and METARIM_BIN unset")
    return max(found, key=lambda p: p.stat().st_mtime)


def train_args(out: Path, frames: int, *extra: str) -> list:
    return [str(metarim_binary()), "train", "--level", "BabyAI-GoToLocalS5N2-v0",
            "--preset", "Tiny", "--frames", str(frames), "--quiet", "--threads", "1",
            "--set", "procs=6", "--set", "frames_per_proc=20", "--set", "recurrence=10",
            "--set", "batch_size=40", "--set", "save_interval=1", "--out", str(out), *extra]


def read_scalars(run: Path) -> dict:
    """{tag: [(step, value), ...]} as TensorBoard loads the run directory."""
    files = sorted(p.name for p in run.iterdir() if "tfevents" in p.name)
    assert len(files) == 1, files
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def read_csv(run: Path) -> list:
    with open(run / "train.csv", newline="") as f:
        return list(csv.DictReader(f))


def decimals(cell: str) -> float:
    """Half a unit of the last printed digit (relative for exponent notation)."""
    if "e" in cell.lower():
        return abs(float(cell)) * 1e-6
    frac = cell.split(".")[1] if "." in cell else ""
    return 0.5 * 10.0 ** -len(frac) + 1e-9


def check_equal_to_csv(run: Path) -> None:
    scalars = read_scalars(run)
    rows = read_csv(run)
    frames = [int(r["frames"]) for r in rows]
    assert frames == sorted(set(frames)), "the CSV repeats or reorders updates"
    numeric = [k for k in rows[0] if k not in ("frames", "level")]
    assert "explained_variance" in numeric and "lr" in numeric
    assert sorted(scalars) == sorted(k for k in numeric if any(r[k] != "" for r in rows))
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        want = [int(r["frames"]) for r in rows if r[tag] != ""]
        assert steps == want, f"{tag}: steps {steps} != CSV frames {want}"
        by_step = dict(points)
        for r in rows:
            if r[tag] == "":
                continue
            shown = float(r[tag])
            got = by_step[int(r["frames"])]
            assert abs(got - shown) <= decimals(r[tag]) + abs(got) * 1e-6, (tag, got, r[tag])


def test_event_scalars_equal_the_csv(tmp_path):
    run = tmp_path / "run"
    res = subprocess.run(train_args(run, 720), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    check_equal_to_csv(run)
    modules = [k for k in read_csv(run)[0] if k.startswith("module_activity/")]
    assert modules, "a RIM run logs each module's activity"


def test_kill_and_resume_leave_no_duplicate_or_missing_step(tmp_path):
    run = tmp_path / "run"
    log = run / "train.jsonl"
    proc = subprocess.Popen(train_args(run, 2_000_000), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 4:
                break
            time.sleep(0.005)
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
    killed_at = len(log.read_text().splitlines())
    assert killed_at >= 4
    res = subprocess.run(train_args(run, 2_000_000, "--resume", "--stop-after-updates", "3"),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [l["update"] for l in lines] == list(range(1, len(lines) + 1))
    walls = [l["wall_s"] for l in lines]
    assert all(b > a for a, b in zip(walls, walls[1:])), walls
    check_equal_to_csv(run)
    for tag, points in read_scalars(run).items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: duplicated steps"
        assert steps == [l["frames"] for l in lines if l.get(tag.split("/")[0]) is not None]
