#!/usr/bin/env python3
"""Summary of scripts/adapt-study.sh's runs.tsv as markdown: per task shift and learner, the
mean success before and after over every (training seed, adaptation seed) run, the mean gain
with a bootstrap 95% interval (resampling training seeds, the runs of a source together,
since they share a policy), the worst run, how many runs lost more than 0.05, how often the
guard kept the adapted weights, and the median episodes after which learning stopped.

    python3 scripts/adapt-summary.py runs/adapt-study/runs.tsv
    python3 scripts/adapt-summary.py runs.tsv --split-before 0.6   # also: weak vs strong sources

With `--split-before T`, each table is followed by the same figures for the sources whose runs
start below T on average (before adapting) and for the others, per learner: how much of the
mean gain a shift's weak sources make, and how much its strong ones.
"""
import argparse
import csv
import random
import statistics
from collections import OrderedDict, defaultdict

LEARNER_ORDER = ["none", "device", "device-noguard", "fast", "attention", "all"]
LEARNER_TEXT = {
    "none": "no adaptation",
    "device": "device learner (fast group, guard): the firmware's",
    "device-noguard": "device learner without the guard",
    "fast": "host, full gradient, fast group (active modules), guard",
    "attention": "host, full gradient, attention only (reversed split), guard",
    "all": "host, full gradient, every parameter (upper bound), guard",
    "fast-critic": "host, full gradient, fast group and critic head, guard",
    "device-confirm": "device learner, guard confirming the final weights on the last 50 episodes, frozen (measured, removed)",
    "device-sc": "device learner, guard, success-weighted advantage centring (measured, removed)",
}


def learner_text(learner):
    """The table's name of a learner (`device-revertsN`: the device learner, N restarts)."""
    if learner.startswith("device-reverts"):
        n = learner[len("device-reverts"):]
        return f"device learner, guard restarting up to {n} times (half the rate each time)"
    if learner.startswith("device-lr"):
        return f"device learner, guard, learning rate {learner[len('device-lr'):]}"
    if learner.startswith("device-look"):
        n = learner[len("device-look"):]
        return f"device learner, guard testing once every {n} episodes (measured, removed)"
    if learner.startswith("device-ent"):
        return f"device learner, guard, entropy weight {learner[len('device-ent'):]}"
    if learner.startswith("device-wps"):
        return f"device learner, guard, {learner[len('device-wps'):]} windows per SGD step"
    if learner.startswith("device-sc-"):
        variant = {"noguard": "no guard", "rz3": "guard restoring at 3 standard errors",
                   "tr100": "guard trailing 100 episodes"}.get(learner[len("device-sc-"):], learner)
        return f"device learner, success-weighted advantage centring, {variant} (measured, removed)"
    if "-vc" in learner:
        base, vc = learner.rsplit("-vc", 1)
        return f"{learner_text(base)}, value loss weight {vc} (the critic learns)"
    return LEARNER_TEXT.get(learner, learner)


def bootstrap_mean(by_source, reps=10000, seed=1):
    """95% percentile interval of the mean gain, resampling sources (clusters of runs)."""
    rng = random.Random(seed)
    keys = list(by_source)
    means = []
    for _ in range(reps):
        runs = []
        for _ in keys:
            runs.extend(by_source[rng.choice(keys)])
        means.append(sum(runs) / len(runs))
    means.sort()
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def split_by_before(lr, threshold):
    """The runs of sources whose mean success before adapting is below `threshold`, and the
    runs of the others."""
    per_source = defaultdict(list)
    for r in lr:
        per_source[r["train_seed"]].append(float(r["before"]))
    weak = {s for s, b in per_source.items() if statistics.mean(b) < threshold}
    return [r for r in lr if r["train_seed"] in weak], [r for r in lr if r["train_seed"] not in weak]


def gain_line(label, lr):
    """`label: N runs (M sources), before, after, mean gain (95% CI), worst` of runs `lr`."""
    if not lr:
        return f"{label}: no runs"
    by_source = defaultdict(list)
    for r in lr:
        by_source[r["train_seed"]].append(float(r["gain"]))
    lo, hi = bootstrap_mean(by_source)
    gains = [float(r["gain"]) for r in lr]
    before = statistics.mean(float(r["before"]) for r in lr)
    after = statistics.mean(float(r["after"]) for r in lr)
    return (f"{label}: {len(lr)} runs ({len(by_source)} sources), before {before:.3f}, after "
            f"{after:.3f}, mean gain {statistics.mean(gains):+.3f} ({lo:+.3f} to {hi:+.3f}), "
            f"worst {min(gains):+.3f}")


def main(path, split_before=None):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    shifts = OrderedDict()
    for r in rows:
        shifts.setdefault((r["shift"], r["source_level"], r["target_level"], r["episodes"]), []).append(r)
    for (shift, src, tgt, episodes), rs in shifts.items():
        print(f"### {shift}: {src} -> {tgt} ({episodes} adaptation episodes)\n")
        print("| learner | runs | before | after | mean gain (95% CI) | worst gain | runs losing > 0.05 | kept | median episodes to stop |")
        print("|---|---|---|---|---|---|---|---|---|")
        by_learner = defaultdict(list)
        for r in rs:
            by_learner[r["learner"]].append(r)
        others = sorted(set(by_learner) - set(LEARNER_ORDER))
        for learner in LEARNER_ORDER[1:] + others:
            lr = by_learner.get(learner)
            if not lr:
                continue
            before = [float(r["before"]) for r in lr]
            after = [float(r["after"]) for r in lr]
            gains = [float(r["gain"]) for r in lr]
            by_source = defaultdict(list)
            for r in lr:
                by_source[r["train_seed"]].append(float(r["gain"]))
            lo, hi = bootstrap_mean(by_source)
            losing = sum(g < -0.05 for g in gains)
            kept = sum(r["kept"] == "yes" for r in lr)
            stops = [int(r["stopped_after"]) for r in lr if int(r["stopped_after"]) > 0 and r["kept"] == "yes"]
            stop = f"{statistics.median(stops):.0f} ({len(stops)} runs)" if stops else "-"
            print(
                f"| {learner_text(learner)} | {len(lr)} ({len(by_source)} sources) "
                f"| {statistics.mean(before):.3f} | {statistics.mean(after):.3f} "
                f"| {statistics.mean(gains):+.3f} ({lo:+.3f} to {hi:+.3f}) | {min(gains):+.3f} "
                f"| {losing} | {kept}/{len(lr)} | {stop} |"
            )
        print()
        if split_before is not None:
            for learner in LEARNER_ORDER[1:] + others:
                lr = by_learner.get(learner)
                if not lr:
                    continue
                weak, strong = split_by_before(lr, split_before)
                print(f"- {learner_text(learner)}:")
                print(f"  - {gain_line(f'sources below {split_before} before', weak)}")
                print(f"  - {gain_line(f'sources at {split_before} or above', strong)}")
            print()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", default="runs.tsv", help="runs.tsv of scripts/adapt-study.sh")
    ap.add_argument("--split-before", type=float, default=None, metavar="T",
                    help="also the figures of the sources below T before adapting and of the others")
    args = ap.parse_args()
    main(args.runs, args.split_before)
