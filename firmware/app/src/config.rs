//! What a run does, fixed at build time: `FW_LEVEL`, `FW_EPISODES`, `FW_ADAPT_EPISODES`,
//! `FW_SEED`, `FW_ACTIONS`
//! (environment variables read by `option_env!`, so a different run is a rebuild; build.rs
//! tracks them; the model blob is not part of the build: it is flashed into its own region, see
//! model.rs). A malformed value is a compile error, never a run-time one.

/// Level id or alias (`Level::from_id`); default `BabyAI-GoToObj-v0`.
pub const LEVEL: &str = match option_env!("FW_LEVEL") {
    Some(s) => s,
    None => "BabyAI-GoToObj-v0",
};

/// Evaluation episodes per phase; default 20.
pub const EPISODES: u32 = match option_env!("FW_EPISODES") {
    Some(s) => parse_u32(s),
    None => 20,
};

/// Seed of the episodes (level seeds and action draws, the host evaluator's scheme); default 1.
pub const SEED: u64 = match option_env!("FW_SEED") {
    Some(s) => parse_u64(s),
    None => 1,
};

/// On-device adaptation episodes (`FW_ADAPT_EPISODES`); default 200; 0 skips adaptation.
pub const ADAPT_EPISODES: u32 = match option_env!("FW_ADAPT_EPISODES") {
    Some(s) => parse_u32(s),
    None => 200,
};

/// Take the most likely action (`FW_ACTIONS=argmax`) or sample (`sample`, the default: the
/// policy as trained, and what the host twin `metarim adapt` evaluates).
pub const ARGMAX: bool = match option_env!("FW_ACTIONS") {
    None => false,
    Some(s) if eq(s, "argmax") => true,
    Some(s) if eq(s, "sample") => false,
    Some(_) => panic!("FW_ACTIONS must be `argmax` or `sample`"),
};

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn parse_u64(s: &str) -> u64 {
    let b = s.as_bytes();
    assert!(!b.is_empty(), "empty number in a FW_* variable");
    let mut v: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let d = b[i];
        assert!(d.is_ascii_digit(), "a FW_* number is not decimal");
        v = match v.checked_mul(10) {
            Some(x) => match x.checked_add((d - b'0') as u64) {
                Some(y) => y,
                None => panic!("a FW_* number overflows"),
            },
            None => panic!("a FW_* number overflows"),
        };
        i += 1;
    }
    v
}

const fn parse_u32(s: &str) -> u32 {
    let v = parse_u64(s);
    assert!(v <= u32::MAX as u64, "a FW_* number overflows u32");
    v as u32
}
