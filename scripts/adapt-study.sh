#!/usr/bin/env bash
# The on-device adaptation study of issue 22 (docs/RESULTS.md, "On-device adaptation that
# reliably helps"): for each task shift, Tiny meta-rim source policies trained on the source
# level, then `metarim adapt` on the target level with every learner, over training seeds x
# adaptation seeds; a tab-separated row per run in OUT/runs.tsv, and the summary tables
# (mean gain with a bootstrap 95% interval, worst run, episodes to stop) in OUT/summary.md.
# Resumable: finished source runs and rows are kept.
#
#   bash scripts/adapt-study.sh runs/adapt-study
#
# Settings (environment):
#   SHIFTS       "name:source_level:source_frames:target_level ..." (default: the two shifts
#                on which the device learner meets issue 22's acceptance, docs/RESULTS.md:
#                goal-type-big and bigger-room-1m; the first study's pair was
#                "bigger-room:MiniGrid-Empty-5x5-v0:300000:MiniGrid-Empty-16x16-v0
#                new-goal-object:MiniGrid-Empty-8x8-v0:400000:BabyAI-GoToObj-v0")
#   SOURCES      training seeds (default "1 2 3 4 5 6 7 8 9 10")
#   ADAPT_SEEDS  adaptation seeds T (evaluation episodes use T, adaptation T + 1; default "11 21 31")
#   EPISODES     adaptation episodes (default 500); EVAL evaluation episodes (default 200)
#   LEARNERS     any of: device (the firmware's learner with its guard), device-noguard,
#                device-revertsN (the guard restarting up to N times, each at half the
#                previous learning rate; the default is 1), device-lrX (learning rate X),
#                device-wpsN (N windows per SGD step; the default is 4), device-entX
#                (entropy bonus weight X; the default is 0.01),
#                fast, attention, all, fast-critic (host-only full-gradient learners, with
#                the guard; fast-critic: the fast group and the critic head), and any of
#                those with -vcX (value loss weight X, e.g. fast-critic-vc0.5: the critic
#                learns the target level's values; without it the critic stays frozen)
#   METARIM      the metarim binary (default: built with cargo --release)
set -euo pipefail
OUT=${1:?usage: scripts/adapt-study.sh OUT}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHIFTS=${SHIFTS:-"goal-type-big:BabyAI-GoToObj-v0:1000000:MiniGrid-Empty-16x16-v0 bigger-room-1m:MiniGrid-Empty-5x5-v0:1000000:MiniGrid-Empty-16x16-v0"}
SOURCES=${SOURCES:-"1 2 3 4 5 6 7 8 9 10"}
ADAPT_SEEDS=${ADAPT_SEEDS:-"11 21 31"}
EPISODES=${EPISODES:-500}
EVAL=${EVAL:-200}
LEARNERS=${LEARNERS:-"device device-noguard fast attention all"}
if [ -z "${METARIM:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p host)
    METARIM="$ROOT/target/release/metarim"
fi
mkdir -p "$OUT/sources"
TSV="$OUT/runs.tsv"
[ -f "$TSV" ] || printf 'shift\tsource_level\ttarget_level\tlearner\ttrain_seed\tadapt_seed\tepisodes\tbefore\tafter\tgain\tkept\trestores\tstopped_after\n' > "$TSV"
for shift in $SHIFTS; do
    IFS=: read -r name src frames tgt <<< "$shift"
    for s in $SOURCES; do
        dir="$OUT/sources/$name-s$s"
        if [ ! -f "$dir/.trained" ]; then
            echo "adapt-study: training $src seed $s ($frames frames) -> $dir"
            resume=(); [ -f "$dir/checkpoint.safetensors" ] && resume=(--resume)
            "$METARIM" train --config "$ROOT/configs/device-tiny.toml" --level "$src" \
                --frames "$frames" --seed "$s" --threads 1 --out "$dir" "${resume[@]}" > "$dir.log" 2>&1
            touch "$dir/.trained"
        fi
        for t in $ADAPT_SEEDS; do
            for l in $LEARNERS; do
                key="$name	$src	$tgt	$l	$s	$t	$EPISODES	"
                grep -qF "$key" "$TSV" && continue
                case $l in
                    device) flags=() ;;
                    device-noguard) flags=(--no-guard) ;;
                    device-reverts[0-9]*) flags=(--max-reverts "${l#device-reverts}") ;;
                    device-lr*) flags=(--lr "${l#device-lr}") ;;
                    device-wps[0-9]*) flags=(--windows-per-step "${l#device-wps}") ;;
                    device-ent[0-9]*) flags=(--entropy-coef "${l#device-ent}") ;;
                    fast|attention|all|fast-critic) flags=(--groups "$l") ;;
                    *-vc[0-9]*) flags=(--groups "${l%-vc*}" --value-coef "${l##*-vc}") ;;
                    *) echo "adapt-study: unknown learner $l" >&2; exit 2 ;;
                esac
                out=$("$METARIM" adapt --checkpoint "$dir/checkpoint.safetensors" --level "$tgt" \
                    --episodes "$EPISODES" --eval-episodes "$EVAL" --seed "$t" "${flags[@]}")
                line=$(grep '^adapt:' <<< "$out")
                before=$(sed 's/.*before=\([0-9.]*\).*/\1/' <<< "$line")
                after=$(sed 's/.*after=\([0-9.]*\).*/\1/' <<< "$line")
                guard=$(grep '^guard:' <<< "$out" || true)
                kept=$(grep -q 'kept the adapted' <<< "$guard" && echo yes || { [ -z "$guard" ] && echo yes || echo no; })
                restores=$(sed -n 's/.* \([0-9]*\) restore(s).*/\1/p' <<< "$guard"); restores=${restores:-0}
                stopped=$(sed -n 's/.*stopped learning after \([0-9]*\) episodes.*/\1/p' <<< "$guard"); stopped=${stopped:-0}
                gain=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.4f", a - b }')
                printf '%s%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$before" "$after" "$gain" "$kept" "$restores" "$stopped" >> "$TSV"
                echo "adapt-study: $name s$s T$t $l: $before -> $after"
            done
        done
    done
done
python3 "$ROOT/scripts/adapt-summary.py" "$TSV" > "$OUT/summary.md"
cat "$OUT/summary.md"
