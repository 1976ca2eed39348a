//! Suite file parser (`host::experiment::spec::Suite::parse`: the suite TOML, its `[base]`
//! config, `[[matrix]]` expansion, `[[arms]]` overrides through `TrainConfig::set`, budget
//! scaling and validation).
//!
//! Checks, for any input: nothing panics; an accepted suite has arms with unique names, each
//! config validating, and a positive episode count; parsing it again with a budget scale of
//! 1/1000 also succeeds and changes only budgets (frames, curriculum frame budgets,
//! `min_frames`, evaluation episodes), never an arm's name, group, label, evaluation levels or
//! any other config field.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use host::experiment::spec::{Overrides, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(suite) = Suite::parse(text, path, &Overrides::default()) else {
        return;
    };
    assert!(!suite.arms.is_empty() && suite.eval.episodes > 0);
    let names: BTreeSet<&str> = suite.arms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.len(), suite.arms.len(), "arm names are not unique");
    for arm in &suite.arms {
        arm.config
            .validate()
            .expect("an accepted arm's config validates");
    }
    let small = Overrides {
        budget_scale: 1e-3,
        ..Overrides::default()
    };
    let scaled = Suite::parse(text, path, &small).expect("scaling the budget keeps a suite valid");
    assert_eq!(
        (&scaled.name, scaled.metric, scaled.seeds, scaled.threshold),
        (&suite.name, suite.metric, suite.seeds, suite.threshold)
    );
    assert!(scaled.min_frames <= suite.min_frames && scaled.eval.episodes <= suite.eval.episodes);
    assert_eq!(scaled.arms.len(), suite.arms.len());
    for (s, a) in scaled.arms.iter().zip(&suite.arms) {
        assert_eq!(
            (&s.name, &s.group, &s.label, &s.eval_levels),
            (&a.name, &a.group, &a.label, &a.eval_levels)
        );
        let mut c = s.config.clone();
        assert!(c.frames <= a.config.frames);
        assert!(c.curriculum_level_frames <= a.config.curriculum_level_frames);
        c.frames = a.config.frames;
        c.curriculum_level_frames = a.config.curriculum_level_frames;
        // (Accepted configs hold no NaN: validation bounds every float field.)
        assert_eq!(c, a.config, "budget scaling changed more than budgets");
    }
});
