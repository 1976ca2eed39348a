//! Property tests of the environment and of input validation.
//!
//! Case counts are modest (CI has 2 cores) and the proptest seed is fixed, so runs are
//! reproducible; `PROPTEST_CASES=N` and `PROPTEST_RNG_SEED=S` override both.

use std::sync::LazyLock;

use metarim_core::env::{Action, Env, Observation, StepOutcome, VIEW_CELLS, VIEW_SIZE};
use metarim_core::layout::RoomLayout;
use metarim_core::levels::{Level, TaskKind};
use metarim_core::mission::instr::{write_surface, Instr};
use metarim_core::state::StateSpec;
use metarim_core::world::{encode_cell, ObjectKind};
use metarim_tests::{movables, movables_after_box_toggle, Movable};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

static LEVELS: LazyLock<Vec<Level>> = LazyLock::new(host::levels::all);

fn config(cases: u32) -> Config {
    let from_env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            cases
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(0x6d65_7461_7269_6d73)
        },
        failure_persistence: None,
        ..from_env
    }
}

/// A level index, a seed and up to 200 action indices.
fn episode_inputs() -> impl Strategy<Value = (usize, u64, Vec<usize>)> {
    let n = LEVELS.len().max(1);
    (0..n, any::<u64>(), prop::collection::vec(0..7usize, 0..200))
}

fn level_at(i: usize) -> Result<Level, TestCaseError> {
    LEVELS
        .get(i)
        .copied()
        .ok_or_else(|| TestCaseError::fail("the level registry is empty"))
}

fn reset(level: &Level, env: &mut Env, seed: u64) -> Result<(), TestCaseError> {
    level.reset(env, seed).map_err(|e| {
        TestCaseError::fail(format!(
            "{} failed to generate for seed {seed}: {e}",
            level.id()
        ))
    })
}

/// What must hold in every state: the agent stands inside the grid on a cell it may overlap,
/// faces one of four directions and sees what it carries in its own view cell.
fn check_state(env: &Env, obs: &Observation, what: &str) -> Result<(), TestCaseError> {
    let p = env.agent_pos;
    prop_assert!(
        env.grid.in_bounds(p),
        "{what}: agent {p:?} outside the grid"
    );
    if let Some(o) = env.grid.get(p) {
        prop_assert!(o.can_overlap(), "{what}: agent {p:?} stands in {o:?}");
    }
    prop_assert!(env.agent_dir < 4, "{what}: direction {}", env.agent_dir);
    let agent_cell = obs[(VIEW_SIZE - 1) * VIEW_SIZE + VIEW_SIZE / 2];
    prop_assert_eq!(
        agent_cell,
        encode_cell(env.carrying.as_ref()),
        "{}: the agent's view cell must show what it carries",
        what
    );
    Ok(())
}

/// In generated levels, the agent carries only what can be picked up, and movable objects have
/// distinct, non-zero identities (verifiers track objects by identity).
fn check_ids(env: &Env, what: &str) -> Result<(), TestCaseError> {
    if let Some(c) = env.carrying {
        prop_assert!(c.can_pickup(), "{what}: carries {c:?}");
    }
    let mut ids: Vec<u16> = movables(env).iter().map(|m| m.2).collect();
    prop_assert!(
        ids.iter().all(|&id| id != 0),
        "{what}: a movable object has no identity: {:?}",
        movables(env)
    );
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    prop_assert_eq!(ids.len(), n, "{}: duplicate identities", what);
    Ok(())
}

/// The movables expected after `action`, given the state before it.
fn expected_movables(before: Vec<Movable>, env_before: &Env, action: Action) -> Vec<Movable> {
    match env_before.grid.get(env_before.front_pos()) {
        Some(o) if action == Action::Toggle && o.kind == ObjectKind::Box => {
            movables_after_box_toggle(&before, o)
        }
        _ => before,
    }
}

/// Step `env` through `actions`, resetting with the following seeds when an episode ends, and
/// return what each step gave (for comparisons between runs).
fn run(
    level: &Level,
    env: &mut Env,
    seed: u64,
    actions: &[usize],
) -> Result<Vec<(StepOutcome, Observation)>, TestCaseError> {
    let mut trail = Vec::with_capacity(actions.len());
    let mut episode = 0u64;
    for &a in actions {
        let out = env.step(Action::ALL[a]);
        trail.push((out, env.observation()));
        if out.terminated || out.truncated {
            episode += 1;
            reset(level, env, seed.wrapping_add(episode))?;
        }
    }
    Ok(trail)
}

proptest! {
    #![proptest_config(config(128))]

    /// Random actions on any level: no panic, invariants after every step, movable objects
    /// conserved (a toggled box is replaced by its contents), rewards in [0, 1], truncation
    /// exactly at the step budget.
    #[test]
    fn random_play_keeps_invariants((li, seed, actions) in episode_inputs()) {
        let level = level_at(li)?;
        let mut env = Env::new(8, 8).expect("8x8 is a valid size");
        reset(&level, &mut env, seed)?;
        let what0 = format!("{} seed {seed} after reset", level.id());
        check_state(&env, &env.observation(), &what0)?;
        check_ids(&env, &what0)?;
        let mut episode = 0u64;
        for (k, &a) in actions.iter().enumerate() {
            let action = Action::ALL[a];
            let what = format!("{} seed {seed} episode {episode} step {k} ({action:?})", level.id());
            let expected = expected_movables(movables(&env), &env, action);
            let before = env.clone();
            let out = env.step(action);
            let obs = env.observation();
            check_state(&env, &obs, &what)?;
            check_ids(&env, &what)?;
            prop_assert_eq!(movables(&env), expected, "{}: movable objects not conserved", &what);
            prop_assert!((0.0..=1.0).contains(&out.reward), "{}: reward {}", what, out.reward);
            prop_assert_eq!(out.truncated, env.step_count >= env.max_steps, "{}", &what);
            if out.reward > 0.0 {
                prop_assert!(out.terminated, "{}: reward without termination", &what);
            }
            if matches!(action, Action::Left | Action::Right | Action::Done) {
                prop_assert_eq!(env.grid.cells(), before.grid.cells(), "{}: turning changed the grid", &what);
                prop_assert_eq!(env.agent_pos, before.agent_pos, "{}", &what);
            }
            if out.terminated || out.truncated {
                episode += 1;
                reset(&level, &mut env, seed.wrapping_add(episode))?;
                let what = format!("{} seed {} after reset", level.id(), seed.wrapping_add(episode));
                check_state(&env, &env.observation(), &what)?;
                check_ids(&env, &what)?;
            }
        }
    }

    /// Same level, seed and actions give identical environments, also when the level is reset
    /// into an environment that has been used before.
    #[test]
    fn same_seed_same_episode((li, seed, actions) in episode_inputs(), other in any::<u64>()) {
        let level = level_at(li)?;
        let mut a = Env::new(8, 8).expect("8x8 is a valid size");
        let mut b = Env::new(8, 8).expect("8x8 is a valid size");
        reset(&level, &mut a, seed)?;
        reset(&level, &mut b, seed)?;
        prop_assert!(a == b, "{} seed {seed}: two resets differ", level.id());
        let ta = run(&level, &mut a, seed, &actions)?;
        let tb = run(&level, &mut b, seed, &actions)?;
        prop_assert!(ta == tb && a == b, "{} seed {seed}: runs differ", level.id());

        // A used environment, reset to the same seed, replays the same episode.
        let mut c = Env::new(8, 8).expect("8x8 is a valid size");
        reset(&level, &mut c, other)?;
        run(&level, &mut c, other, &actions)?;
        reset(&level, &mut c, seed)?;
        let mut fresh = Env::new(8, 8).expect("8x8 is a valid size");
        reset(&level, &mut fresh, seed)?;
        prop_assert!(c == fresh, "{} seed {seed}: reset into a used env differs", level.id());
        let tc = run(&level, &mut c, seed, &actions)?;
        prop_assert!(tc == ta, "{} seed {seed}: replay in a used env differs", level.id());
    }
}

// ---------------------------------------------------------------------------------------------
// Bad inputs: errors, never panics.

const WORDS: &[&str] = &[
    "go", "to", "the", "a", "pick", "up", "open", "put", "next", "and", ",", "then", "then,",
    "after", "you", "red", "green", "blue", "purple", "yellow", "grey", "key", "ball", "box",
    "door", "object", "wall", "goal", "in", "front", "of", "behind", "on", "your", "left", "right",
    "ball,", "key,", "door,", "box,", "object,", "you,", "left,", "right,", "", "  ", "\u{e9}",
];

fn word_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..24).prop_map(|w| w.join(" "))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..80).prop_map(|c| c.into_iter().collect()),
        prop::collection::vec(
            prop::sample::select(vec!['a', ' ', ',', 'o', 't', '\t', '\n']),
            0..300
        )
        .prop_map(|c| c.into_iter().collect()),
        word_soup(),
    ]
}

/// A description whose type satisfies `kinds`.
fn desc(kinds: &'static [&'static str]) -> BoxedStrategy<String> {
    (
        prop::sample::select(vec!["the", "a"]),
        prop::option::of(prop::sample::select(vec![
            "red", "green", "blue", "purple", "yellow", "grey",
        ])),
        prop::sample::select(kinds),
        prop::option::of(prop::sample::select(vec![
            "in front of you",
            "behind you",
            "on your left",
            "on your right",
        ])),
    )
        .prop_map(|(art, color, kind, loc)| {
            let mut s = art.to_string();
            for w in [color, Some(kind), loc].into_iter().flatten() {
                s.push(' ');
                s.push_str(w);
            }
            s
        })
        .boxed()
}

const ANY_KIND: &[&str] = &["key", "ball", "box", "door", "object"];
const MOVABLE: &[&str] = &["key", "ball", "box", "object"];
const DOOR: &[&str] = &["door"];

/// A mission in BabyAI's grammar (strategies boxed: nested unions are large on the stack).
fn valid_mission() -> BoxedStrategy<String> {
    let action = prop_oneof![
        desc(ANY_KIND).prop_map(|d| format!("go to {d}")),
        desc(MOVABLE).prop_map(|d| format!("pick up {d}")),
        desc(DOOR).prop_map(|d| format!("open {d}")),
        (desc(MOVABLE), desc(ANY_KIND)).prop_map(|(a, b)| format!("put {a} next to {b}")),
    ]
    .boxed();
    let clause = prop_oneof![
        action.clone(),
        (action.clone(), action).prop_map(|(a, b)| format!("{a} and {b}")),
    ]
    .boxed();
    prop_oneof![
        clause.clone(),
        (clause.clone(), clause.clone()).prop_map(|(a, b)| format!("{a}, then {b}")),
        (clause.clone(), clause).prop_map(|(a, b)| format!("{a} after you {b}")),
    ]
    .boxed()
}

fn render(instr: &Instr) -> String {
    let mut s = String::new();
    write_surface(instr, |_| 1, &mut s).expect("writing to a String cannot fail");
    s
}

/// A valid cell code, mostly empty.
fn cell() -> impl Strategy<Value = [u8; 3]> {
    prop_oneof![
        8 => Just([1u8, 0, 0]),
        2 => Just([2u8, 5, 0]),
        3 => (3u8..10, 0u8..6, 0u8..3).prop_map(|(t, c, s)| [t, c, if t == 4 { s } else { 0 }]),
    ]
}

/// Any cell code, often out of range.
fn any_cell() -> impl Strategy<Value = [u8; 3]> {
    prop_oneof![
        any::<[u8; 3]>(),
        (0u8..12, 0u8..7, 0u8..4).prop_map(|(t, c, s)| [t, c, s]),
    ]
}

#[derive(Debug, Clone)]
struct RawState {
    width: usize,
    height: usize,
    cells: Vec<[u8; 3]>,
    agent_pos: [i64; 2],
    agent_dir: i64,
    carrying: Option<[u8; 3]>,
    mission: String,
    max_steps: u32,
    step_count: u32,
    view_size: i64,
    see_through_walls: bool,
    task: TaskKind,
    layout: Option<RoomLayout>,
}

fn raw_state() -> BoxedStrategy<RawState> {
    let size = prop_oneof![4 => 3usize..12, 1 => 0usize..40];
    (size.clone(), size)
        .prop_flat_map(|(w, h)| {
            let n = w * h;
            let cells = prop_oneof![
                6 => prop::collection::vec(cell(), n..=n),
                // one bad code somewhere
                2 => (prop::collection::vec(cell(), n.max(1)..=n.max(1)), any::<prop::sample::Index>(), any_cell())
                    .prop_map(|(mut v, i, c)| {
                        let k = i.index(v.len());
                        v[k] = c;
                        v
                    }),
                1 => prop::collection::vec(cell(), 0..(n + 3)),
            ];
            let pos = prop_oneof![
                4 => (0..w.max(1) as i64, 0..h.max(1) as i64).prop_map(|(x, y)| [x, y]),
                1 => any::<[i64; 2]>(),
                1 => (-2i64..40, -2i64..40).prop_map(|(x, y)| [x, y]),
            ];
            let layout = prop_oneof![
                2 => Just(None),
                2 => (3i32..9, 1i32..4, 1i32..4).prop_map(|(s, r, c)| Some(RoomLayout { room_size: s, num_rows: r, num_cols: c })),
                1 => (-3i32..40, -3i32..6, -3i32..6).prop_map(|(s, r, c)| Some(RoomLayout { room_size: s, num_rows: r, num_cols: c })),
                1 => any::<(i32, i32, i32)>().prop_map(|(s, r, c)| Some(RoomLayout { room_size: s, num_rows: r, num_cols: c })),
            ];
            let mission = prop_oneof![3 => valid_mission(), 1 => any_text(),
                1 => (prop::sample::select(vec!["red", "green", "blue", "purple", "yellow", "grey", "pink"]),
                      prop::sample::select(vec!["key", "ball", "box", "door", "wall"]))
                    .prop_map(|(c, k)| format!("pick up the {c} {k}"))];
            (
                (Just(w), Just(h), cells, pos, prop_oneof![4 => 0i64..4, 1 => any::<i64>()]),
                (
                    prop_oneof![3 => Just(None), 1 => (prop_oneof![cell(), any_cell()]).prop_map(Some)],
                    mission,
                    prop_oneof![any::<u32>(), 0u32..200],
                    prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
                    prop_oneof![8 => Just(7i64), 1 => any::<i64>()],
                    any::<bool>(),
                    prop::sample::select(vec![TaskKind::Goal, TaskKind::Instr, TaskKind::PickupNamed]),
                    layout,
                    prop::bool::weighted(0.75),
                ),
            )
        })
        .prop_map(
            |((width, height, mut cells, agent_pos, agent_dir), (carrying, mission, max_steps, step_count, view_size, see_through_walls, task, layout, free))| {
                // Mostly keep the agent's cell free, so that many states load.
                let [x, y] = agent_pos;
                if free && (0..width as i64).contains(&x) && (0..height as i64).contains(&y) {
                    if let Some(c) = cells.get_mut(y as usize * width + x as usize) {
                        *c = [1, 0, 0];
                    }
                }
                RawState {
                width,
                height,
                cells,
                agent_pos,
                agent_dir,
                carrying,
                mission,
                max_steps,
                step_count,
                view_size,
                see_through_walls,
                task,
                layout,
            }},
        )
        .boxed()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text: parsing never panics; what parses renders back to text that parses to the
    /// same instruction.
    #[test]
    fn instr_parse_never_panics(text in any_text()) {
        if let Ok(instr) = Instr::parse(&text) {
            let again = render(&instr);
            prop_assert_eq!(Instr::parse(&again), Ok(instr), "{:?} -> {:?}", text, again);
        }
    }

    /// Missions in the grammar parse, and round-trip through rendering.
    #[test]
    fn valid_missions_parse(text in valid_mission()) {
        let instr = Instr::parse(&text);
        prop_assert!(instr.is_ok(), "{:?}: {:?}", text, instr);
        let instr = instr.unwrap();
        prop_assert_eq!(Instr::parse(&render(&instr)), Ok(instr));
    }

    /// Random states: `Env::from_state` returns an error or an environment in which every
    /// action and observation works and the agent stands where it may.
    #[test]
    fn from_state_never_panics(s in raw_state(), actions in prop::collection::vec(0..7usize, 0..40)) {
        let spec = StateSpec {
            width: s.width,
            height: s.height,
            cells: &s.cells,
            agent_pos: s.agent_pos,
            agent_dir: s.agent_dir,
            carrying: s.carrying,
            mission: &s.mission,
            max_steps: s.max_steps,
            step_count: s.step_count,
            view_size: s.view_size,
            see_through_walls: s.see_through_walls,
            task: s.task,
            layout: s.layout,
        };
        if let Ok(mut env) = Env::from_state(&spec) {
            check_state(&env, &env.observation(), "loaded state")?;
            check_ids(&env, "loaded state")?;
            for &a in &actions {
                env.step(Action::ALL[a]);
                let mut obs = [[0u8; 3]; VIEW_CELLS];
                env.observe(&mut obs);
                check_state(&env, &obs, "after a step")?;
            }
        }
    }

    /// Random cell codes: decoding gives an object, nothing, or an error; never a panic.
    #[test]
    fn action_and_cell_codes_are_validated(i in any::<i64>(), code in any::<[u8; 3]>()) {
        prop_assert_eq!(Action::from_index(i).is_ok(), (0..7).contains(&i));
        let _ = metarim_core::world::Object::decode(code);
    }
}
