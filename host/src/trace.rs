//! The conformance trace format and its replay.
//!
//! A trace file holds one episode per line as JSON (fields in `tests/data/README.md`),
//! optionally gzip-compressed (detected from the content, not the file name).
//! [`replay_episode`] loads an episode's initial state into an [`Env`], replays its actions and
//! compares everything the trace recorded; [`replay_reader`] does that for every line of a file.
//!
//! Memory is bounded whatever the file holds: a line (one episode) longer than
//! [`MAX_LINE_BYTES`] (16 MiB, after decompression) stops the replay with an error naming the
//! line and the limit, before the rest of it is read, so a small `.gz` that inflates to a
//! line of gigabytes costs at most that much plus the parsed episode (a small multiple of it).
//! The longest recorded episode (MiniGrid-DoorKey-16x16, 2,560 steps, in
//! `tests/data/minigrid-3.2.0-extra-traces.jsonl.gz`) is a 1.3 MB line.
//!
//! Step numbering in reports: step 0 is the initial observation (`obs0`), step `k >= 1` is the
//! state after the `k`-th action, and `final_grid` is checked at the last step.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use metarim_core::env::{Action, Env, Observation, VIEW_CELLS, VIEW_SIZE};
use metarim_core::grid::Pos;
use metarim_core::state::StateSpec;
use metarim_core::world::Object;

/// One cell as recorded: `[type, color, state]`. Wider than `u8` so that out-of-range codes
/// are reported by this module with their position instead of as a JSON type error.
pub type Cell = [i64; 3];

/// One recorded episode (one line of a trace file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Level id given to `gym.make` (or `metarim env dump --level`).
    pub env_id: String,
    /// Seed given to `reset`.
    pub seed: u64,
    /// Grid width.
    pub width: usize,
    /// Grid height.
    pub height: usize,
    /// Initial grid, `width * height` cells, row-major (`grid[y * width + x]`), agent not drawn.
    pub grid: Vec<Cell>,
    /// Initial agent position `[x, y]`.
    pub agent_pos: [i64; 2],
    /// Initial agent direction (0 +x, 1 +y, 2 -x, 3 -y).
    pub agent_dir: i64,
    /// Mission text.
    pub mission: String,
    /// Step budget.
    pub max_steps: u32,
    /// Side of the agent's view (7).
    pub agent_view_size: i64,
    /// Whether the agent sees through walls.
    pub see_through_walls: bool,
    /// The observation after `reset`, `7 * 7` cells row-major (`obs[j * 7 + i]`).
    pub obs0: Vec<Cell>,
    /// The actions taken and what followed each.
    pub steps: Vec<TraceStep>,
    /// The grid after the last step (same layout as `grid`).
    pub final_grid: Vec<Cell>,
    /// Recorded under BabyAI's done-action rules (minigrid's `BABYAI_DONE_ACTIONS`;
    /// [`Env::done_actions`]). Absent: off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done_actions: bool,
}

/// One recorded step: the action and the state after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    /// Action index (0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle, 6 done).
    pub action: i64,
    /// Observation after the action.
    pub obs: Vec<Cell>,
    /// Agent direction after the action.
    pub dir: i64,
    /// Agent position after the action.
    pub pos: [i64; 2],
    /// Reward of the action, rounded to 6 decimals.
    pub reward: f64,
    /// The episode ended.
    pub terminated: bool,
    /// The step budget ran out.
    pub truncated: bool,
    /// What the agent carries after the action.
    pub carrying: Option<Cell>,
}

/// Longest accepted line of a trace file in bytes (after decompression): one episode's JSON.
/// Over 12 times the longest recorded episode (1.3 MB: 2,560 steps on a 16x16 grid), and
/// small enough that a hostile file cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Largest accepted difference between a replayed and a recorded reward (the trace rounds to
/// 6 decimals).
pub const REWARD_TOLERANCE: f64 = 1e-6;

/// The first disagreement between a replay and its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// 0-based index of the episode in its file.
    pub episode: usize,
    /// Level id.
    pub env_id: String,
    /// Episode seed.
    pub seed: u64,
    /// Step (0: initial state, `k`: after the `k`-th action).
    pub step: usize,
    /// What differs, e.g. `reward`, `obs[i=3,j=5]` or `final_grid[x=4,y=2]`; `state` when the
    /// initial state could not be loaded.
    pub field: String,
    /// Recorded value.
    pub expected: String,
    /// Replayed value (or the error).
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mismatch: episode={} env={} seed={} step={} field={} expected={} got={}",
            self.episode, self.env_id, self.seed, self.step, self.field, self.expected, self.got
        )
    }
}

/// Why one line of a trace file did not replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The line is not a trace episode (bad JSON, a missing field, a wrong type).
    BadLine {
        /// 0-based episode index (non-empty lines counted).
        episode: usize,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        error: String,
    },
    /// The episode was read but its replay disagrees with it, or its state cannot be loaded.
    Mismatch(Mismatch),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadLine {
                episode,
                line,
                error,
            } => write!(
                f,
                "mismatch: episode={episode} line={line}: not a valid trace episode: {error}"
            ),
            Failure::Mismatch(m) => m.fmt(f),
        }
    }
}

/// How many episodes of a file replayed exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Episodes that match their trace.
    pub matched: usize,
    /// Episodes read (every non-empty line).
    pub total: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay: {}/{} episodes match", self.matched, self.total)
    }
}

/// Open a trace file, decompressing it when it starts with the gzip magic bytes.
pub fn open_trace(path: &Path) -> Result<Box<dyn BufRead>> {
    let file =
        File::open(path).with_context(|| format!("cannot open trace file {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .with_context(|| format!("cannot read trace file {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// Read the next line of `reader` into `buf` (cleared first; the `\n` or `\r\n` removed),
/// holding at most `max` bytes of it. `Ok(false)` at the end of the input; an
/// [`std::io::ErrorKind::InvalidData`] error when the line is longer than `max` (the rest of
/// it is not read) or is not UTF-8.
pub fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut String,
    max: usize,
) -> std::io::Result<bool> {
    buf.clear();
    let mut bytes = std::mem::take(buf).into_bytes();
    let mut seen_any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        seen_any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if bytes.len() + take > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the line is longer than {} MiB ({max} bytes), the limit for one episode",
                    max >> 20
                ),
            ));
        }
        bytes.extend_from_slice(&chunk[..take]);
        reader.consume(take + usize::from(done));
        if done {
            break;
        }
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    *buf = String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the line is not valid UTF-8",
        )
    })?;
    Ok(seen_any)
}

/// Parse one trace line.
pub fn parse_episode(line: &str) -> Result<Episode> {
    Ok(serde_json::from_str(line)?)
}

/// Replay every episode read from `reader` (named `source` in errors), calling `report` with
/// each failing episode's first failure. Lines that are not episodes count as failures; an
/// I/O or decompression error, a line that is not UTF-8 or one longer than [`MAX_LINE_BYTES`]
/// stops the replay with an error.
pub fn replay_reader<R: BufRead>(
    mut reader: R,
    source: &str,
    mut report: impl FnMut(&Failure),
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut line = String::new();
    for i in 0.. {
        let more = read_line_bounded(&mut reader, &mut line, MAX_LINE_BYTES)
            .with_context(|| format!("cannot read {source} at line {}", i + 1))?;
        if !more {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let episode = summary.total;
        summary.total += 1;
        let failure = match parse_episode(&line) {
            Err(e) => Some(Failure::BadLine {
                episode,
                line: i + 1,
                error: format!("{e:#}"),
            }),
            Ok(ep) => replay_episode(episode, &ep)
                .err()
                .map(|m| Failure::Mismatch(*m)),
        };
        match failure {
            None => summary.matched += 1,
            Some(f) => report(&f),
        }
    }
    Ok(summary)
}

/// Replay the trace file at `path`; see [`replay_reader`].
pub fn replay_file(path: &Path, report: impl FnMut(&Failure)) -> Result<Summary> {
    let reader = open_trace(path)?;
    replay_reader(reader, &path.display().to_string(), report)
}

/// Convert a recorded cell to `u8` codes, validated against minigrid's tables; `what` names
/// the cell in the error.
pub fn cell_code(cell: Cell, what: impl Fn() -> String) -> Result<[u8; 3]> {
    let mut code = [0u8; 3];
    for (dst, v) in code.iter_mut().zip(cell) {
        *dst = u8::try_from(v).map_err(|_| {
            anyhow!(
                "{}: cell code {} has a value outside 0..=255",
                what(),
                fmt_cell(cell)
            )
        })?;
    }
    Object::decode(code).map_err(|e| anyhow!("{}: cell code {}: {e}", what(), fmt_cell(cell)))?;
    Ok(code)
}

/// Build the episode's initial state: task kind and room layout come from the level registry,
/// nothing is carried, no step has been taken.
pub fn load_env(ep: &Episode) -> Result<Env> {
    let level = crate::levels::lookup(&ep.env_id)?;
    let max = metarim_core::grid::MAX_GRID_SIZE;
    if !(3..=max).contains(&ep.width) || !(3..=max).contains(&ep.height) {
        bail!(
            "grid size {}x{} unsupported (3..={max} per side)",
            ep.width,
            ep.height
        );
    }
    if ep.grid.len() != ep.width * ep.height {
        bail!(
            "grid has {} cells, expected width*height = {}*{}",
            ep.grid.len(),
            ep.width,
            ep.height
        );
    }
    let cells = ep
        .grid
        .iter()
        .enumerate()
        .map(|(k, c)| {
            cell_code(*c, || {
                format!("grid cell {k} (x={}, y={})", k % ep.width, k / ep.width)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = StateSpec {
        width: ep.width,
        height: ep.height,
        cells: &cells,
        agent_pos: ep.agent_pos,
        agent_dir: ep.agent_dir,
        carrying: None,
        mission: &ep.mission,
        max_steps: ep.max_steps,
        step_count: 0,
        view_size: ep.agent_view_size,
        see_through_walls: ep.see_through_walls,
        task: level.task_kind(),
        layout: level.layout(),
    };
    let mut env =
        Env::from_state(&spec).map_err(|e| anyhow!("cannot load the initial state: {e}"))?;
    env.done_actions = ep.done_actions;
    Ok(env)
}

/// `[a,b,c]`.
pub fn fmt_cell(c: Cell) -> String {
    format!("[{},{},{}]", c[0], c[1], c[2])
}

fn fmt_code(c: [u8; 3]) -> String {
    fmt_cell(c.map(i64::from))
}

fn fmt_opt(c: Option<Cell>) -> String {
    c.map_or_else(|| "null".to_string(), fmt_cell)
}

/// Replay one episode; `Err` holds the first disagreement (or why the state did not load).
pub fn replay_episode(index: usize, ep: &Episode) -> Result<(), Box<Mismatch>> {
    let mismatch = |step: usize, field: String, expected: String, got: String| {
        Box::new(Mismatch {
            episode: index,
            env_id: ep.env_id.clone(),
            seed: ep.seed,
            step,
            field,
            expected,
            got,
        })
    };
    let mut env = load_env(ep).map_err(|e| {
        mismatch(
            0,
            "state".into(),
            "a loadable initial state".into(),
            format!("error: {e:#}"),
        )
    })?;
    let mut obs: Observation = [[0; 3]; VIEW_CELLS];
    env.observe(&mut obs);
    if let Some((field, expected, got)) = compare_obs(&env, &ep.obs0, &obs) {
        return Err(mismatch(0, field, expected, got));
    }
    for (k, st) in ep.steps.iter().enumerate() {
        let step = k + 1;
        let action = Action::from_index(st.action).map_err(|e| {
            mismatch(
                step,
                "action".into(),
                "an action index in 0..7".into(),
                format!("{} ({e})", st.action),
            )
        })?;
        let out = env.step(action);
        env.observe(&mut obs);
        if let Some((field, expected, got)) = compare_obs(&env, &st.obs, &obs) {
            return Err(mismatch(step, field, expected, got));
        }
        let checks: [(&str, String, String, bool); 6] = [
            (
                "dir",
                st.dir.to_string(),
                env.agent_dir.to_string(),
                st.dir == i64::from(env.agent_dir),
            ),
            (
                "pos",
                format!("[{},{}]", st.pos[0], st.pos[1]),
                format!("[{},{}]", env.agent_pos.x, env.agent_pos.y),
                st.pos == [i64::from(env.agent_pos.x), i64::from(env.agent_pos.y)],
            ),
            (
                "reward",
                format!("{}", st.reward),
                format!("{}", out.reward),
                (f64::from(out.reward) - st.reward).abs() <= REWARD_TOLERANCE,
            ),
            (
                "terminated",
                st.terminated.to_string(),
                out.terminated.to_string(),
                st.terminated == out.terminated,
            ),
            (
                "truncated",
                st.truncated.to_string(),
                out.truncated.to_string(),
                st.truncated == out.truncated,
            ),
            (
                "carrying",
                fmt_opt(st.carrying),
                fmt_opt(env.carrying.map(|o| o.encode().map(i64::from))),
                st.carrying == env.carrying.map(|o| o.encode().map(i64::from)),
            ),
        ];
        if let Some((field, expected, got, _)) = checks.into_iter().find(|c| !c.3) {
            return Err(mismatch(step, field.into(), expected, got));
        }
    }
    let last = ep.steps.len();
    let n = ep.width.saturating_mul(ep.height);
    let mut grid = vec![[0u8; 3]; n];
    let written = env.grid.encode_into(&mut grid).unwrap_or(0);
    if written != n || ep.final_grid.len() != n {
        return Err(mismatch(
            last,
            "final_grid.len".into(),
            format!("{} cells ({}x{})", ep.final_grid.len(), ep.width, ep.height),
            format!(
                "{} cells ({}x{})",
                written,
                env.grid.width(),
                env.grid.height()
            ),
        ));
    }
    if let Some(k) = (0..n).find(|&k| ep.final_grid[k] != grid[k].map(i64::from)) {
        return Err(mismatch(
            last,
            format!("final_grid[x={},y={}]", k % ep.width, k / ep.width),
            fmt_cell(ep.final_grid[k]),
            fmt_code(grid[k]),
        ));
    }
    Ok(())
}

/// The first differing observation cell, as `(field, expected, got)`; the field names the view
/// cell `(i, j)` and the world cell it shows.
fn compare_obs(
    env: &Env,
    expected: &[Cell],
    got: &Observation,
) -> Option<(String, String, String)> {
    if expected.len() != VIEW_CELLS {
        return Some((
            "obs.len".into(),
            format!("{} cells", expected.len()),
            format!("{VIEW_CELLS} cells"),
        ));
    }
    let k = (0..VIEW_CELLS).find(|&k| expected[k] != got[k].map(i64::from))?;
    let (i, j) = (k % VIEW_SIZE, k / VIEW_SIZE);
    let Pos { x, y } = env.view_to_world(i, j);
    Some((
        format!("obs[i={i},j={j}](world x={x},y={y})"),
        fmt_cell(expected[k]),
        fmt_code(got[k]),
    ))
}

/// The trace record of `env`'s current state as an episode with no steps (`obs0` filled,
/// `final_grid` equal to `grid`), for `metarim env dump`.
pub fn episode_from_env(env_id: &str, seed: u64, env: &Env) -> Episode {
    let n = (env.grid.width() * env.grid.height()) as usize;
    let mut grid = vec![[0u8; 3]; n];
    // `grid` has exactly the cells the encoding needs, so this cannot fail.
    let _ = env.grid.encode_into(&mut grid);
    let grid: Vec<Cell> = grid.into_iter().map(|c| c.map(i64::from)).collect();
    let obs0 = env.observation().iter().map(|c| c.map(i64::from)).collect();
    Episode {
        env_id: env_id.to_string(),
        seed,
        width: env.grid.width() as usize,
        height: env.grid.height() as usize,
        final_grid: grid.clone(),
        grid,
        agent_pos: [i64::from(env.agent_pos.x), i64::from(env.agent_pos.y)],
        agent_dir: i64::from(env.agent_dir),
        mission: env.mission.as_str().to_string(),
        max_steps: env.max_steps,
        agent_view_size: VIEW_SIZE as i64,
        see_through_walls: env.see_through_walls,
        obs0,
        steps: Vec::new(),
        done_actions: env.done_actions,
    }
}

/// Write `ep` as one JSON line.
pub fn write_episode<W: Write>(out: &mut W, ep: &Episode) -> Result<()> {
    serde_json::to_writer(&mut *out, ep)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Read all of `reader` as episodes (for tools and tests that want them in memory).
/// Lines are limited to [`MAX_LINE_BYTES`] as in [`replay_reader`].
pub fn read_episodes<R: Read>(reader: R) -> Result<Vec<Episode>> {
    let mut reader = BufReader::new(reader);
    let mut episodes = Vec::new();
    let mut line = String::new();
    for i in 1.. {
        if !read_line_bounded(&mut reader, &mut line, MAX_LINE_BYTES)
            .with_context(|| format!("cannot read line {i}"))?
        {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        episodes.push(
            parse_episode(&line).with_context(|| format!("line {i}: not a valid trace episode"))?,
        );
    }
    Ok(episodes)
}
