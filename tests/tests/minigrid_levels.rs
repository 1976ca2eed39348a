//! Seed-exact levels: `metarim env dump` (with `--continue` for the levels after the first)
//! against minigrid 3.2.0's own `reset(seed=S)` and the unseeded `reset()`s after it, for every
//! registered level, on the vendored sample `tests/data/minigrid-3.2.0-levels.jsonl.gz`
//! (seeds 0, 1, 2, 2^32 + 5 and 2^64 - 1, three levels each; made by
//! `scripts/minigrid-levels.py --record`, which also checks any other seeds live).

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

const FIELDS: [&str; 7] = [
    "width",
    "height",
    "grid",
    "agent_pos",
    "agent_dir",
    "mission",
    "max_steps",
];

#[test]
fn every_level_is_minigrids_level_for_the_same_seed_and_after_unseeded_resets() {
    let mut text = String::new();
    flate2::read::GzDecoder::new(&include_bytes!("../data/minigrid-3.2.0-levels.jsonl.gz")[..])
        .read_to_string(&mut text)
        .unwrap();
    // (level, seed) -> minigrid's states in reset order.
    let mut want: BTreeMap<(String, u64), Vec<Value>> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["env_id"].as_str().unwrap().to_string(),
            v["seed"].as_u64().unwrap(),
        );
        let states = want.entry(key).or_default();
        assert_eq!(v["reset"].as_u64().unwrap() as usize, states.len() + 1);
        states.push(v);
    }
    let ids = host::levels::all_ids();
    let levels_in_sample: std::collections::BTreeSet<&String> = want.keys().map(|k| &k.0).collect();
    assert_eq!(
        levels_in_sample.len(),
        ids.len(),
        "the sample covers every registered level"
    );
    let mut checked = 0;
    for ((id, seed), states) in &want {
        let mut out = Vec::new();
        host::dump::dump(&mut out, id, states.len() as u64, *seed, true).unwrap();
        let ours: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ours.len(), states.len());
        for (k, (m, r)) in states.iter().zip(&ours).enumerate() {
            for f in FIELDS {
                assert_eq!(m[f], r[f], "{id} seed {seed} reset {}: {f} differs", k + 1);
            }
            checked += 1;
        }
        // The first state is also what a plain seeded dump gives.
        let mut one = Vec::new();
        host::dump::dump(&mut one, id, 1, *seed, false).unwrap();
        let first: Value =
            serde_json::from_slice(one.split(|b| *b == b'\n').next().unwrap()).unwrap();
        for f in FIELDS {
            assert_eq!(states[0][f], first[f], "{id} seed {seed}: {f} differs");
        }
    }
    assert_eq!(checked, 630);
}
