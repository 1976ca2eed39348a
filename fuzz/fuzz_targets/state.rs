//! State loader of the core (`metarim_core::state`: `Env::from_state` / `Env::load_state`, the
//! `no_std` code that trace replay and the device use), driven without JSON so that every
//! execution reaches it, then stepped with the input's actions.
//!
//! Input layout (little-endian, missing bytes read as 0, cells missing past the end as empty):
//! `w h flags x y dir max_steps:u16 step_count:u8 carrying:3 layout:3 mission_len mission...
//! n_actions(mod 65) actions... cells(3 bytes each, row-major)`; `flags`: bit 0 see through
//! walls, bits 1-2 the task kind (goal, instruction, named pickup), bit 3 carrying, bit 4 room
//! layout, bit 5 a view size other than 7. Widths and heights run past the grid's maximum;
//! cell and carried codes are reduced into the valid range except the value 255, which stays
//! out of range.
//!
//! Checks, for any input: loading and stepping never panic; a loaded state has the agent in
//! bounds, on a cell it may stand on, facing a valid direction, with the given mission; loading
//! in place into an environment that has already been used (up to 16 steps; `load_state`)
//! gives an environment equal to a fresh one (`from_state`) that behaves the same: same
//! observations and step outcomes for every action, which stay valid codes with the agent in
//! bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metarim_core::env::{Action, Env, Observation, VIEW_CELLS};
use metarim_core::layout::RoomLayout;
use metarim_core::levels::TaskKind;
use metarim_core::state::StateSpec;
use metarim_core::world::Object;

/// Reads the input front to back; past the end every byte is 0.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// A cell code: each field reduced into its valid range, except 255.
    fn code(&mut self) -> [u8; 3] {
        let f = |b: u8, n: u8| if b == 255 { b } else { b % n };
        [f(self.u8(), 11), f(self.u8(), 6), f(self.u8(), 3)]
    }
}

/// The observation's codes all decode.
fn assert_valid_obs(obs: &Observation) {
    for c in obs.iter() {
        assert!(
            Object::decode(*c).is_ok(),
            "observation holds bad code {c:?}"
        );
    }
}

fn assert_agent_ok(env: &Env) {
    assert!(env.grid.in_bounds(env.agent_pos), "agent out of bounds");
    assert!(env.agent_dir < 4);
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let width = 3 + usize::from(b.u8() % 32);
    let height = 3 + usize::from(b.u8() % 32);
    let flags = b.u8();
    let agent_pos = [i64::from(b.u8() as i8), i64::from(b.u8() as i8)];
    let agent_dir = i64::from(b.u8() % 5);
    let max_steps = u32::from(u16::from_le_bytes([b.u8(), b.u8()]));
    let step_count = u32::from(b.u8());
    let carried = b.code();
    let lay = [b.u8() as i8, b.u8() as i8, b.u8() as i8].map(i32::from);
    let mission_len = usize::from(b.u8());
    let mission = String::from_utf8_lossy(b.take(mission_len)).into_owned();
    let n_actions = usize::from(b.u8() % 65);
    let actions: Vec<Action> = b
        .take(n_actions)
        .iter()
        .map(|a| Action::from_index(i64::from(a % 7)).expect("0..7 are actions"))
        .collect();
    let cells: Vec<[u8; 3]> = (0..width * height)
        .map(|_| if b.0.is_empty() { [1, 0, 0] } else { b.code() })
        .collect();
    let spec = StateSpec {
        width,
        height,
        cells: &cells,
        agent_pos,
        agent_dir,
        carrying: (flags & 8 != 0).then_some(carried),
        mission: &mission,
        max_steps,
        step_count,
        view_size: if flags & 32 != 0 { i64::from(flags) } else { 7 },
        see_through_walls: flags & 1 != 0,
        task: match (flags >> 1) & 3 {
            0 => TaskKind::Goal,
            1 => TaskKind::Instr,
            _ => TaskKind::PickupNamed,
        },
        layout: (flags & 16 != 0).then_some(RoomLayout {
            room_size: lay[0],
            num_rows: lay[1],
            num_cols: lay[2],
        }),
    };
    let Ok(mut fresh) = Env::from_state(&spec) else {
        return;
    };
    assert_agent_ok(&fresh);
    assert!(fresh
        .grid
        .get(fresh.agent_pos)
        .is_none_or(|o| o.can_overlap()));
    assert_eq!(fresh.mission.as_str(), mission);
    // A used environment, loaded in place.
    let mut reused = fresh.clone();
    for a in actions.iter().rev().take(16) {
        reused.step(*a);
    }
    reused
        .load_state(&spec)
        .expect("a state that loads fresh loads in place");
    assert!(reused == fresh, "an in-place load differs from a fresh one");
    let (mut o1, mut o2): (Observation, Observation) = ([[0; 3]; VIEW_CELLS], [[0; 3]; VIEW_CELLS]);
    fresh.observe(&mut o1);
    reused.observe(&mut o2);
    assert_eq!(o1, o2, "initial observation differs after an in-place load");
    assert_valid_obs(&o1);
    for a in &actions {
        let (s1, s2) = (fresh.step(*a), reused.step(*a));
        assert_eq!(s1, s2, "step outcome differs after an in-place load");
        fresh.observe(&mut o1);
        reused.observe(&mut o2);
        assert_eq!(o1, o2, "observation differs after an in-place load");
        assert_valid_obs(&o1);
        assert_agent_ok(&fresh);
        assert_eq!(
            (
                fresh.agent_pos,
                fresh.agent_dir,
                fresh.carrying.map(|o| o.encode())
            ),
            (
                reused.agent_pos,
                reused.agent_dir,
                reused.carrying.map(|o| o.encode())
            )
        );
    }
});
