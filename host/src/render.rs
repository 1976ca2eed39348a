//! Gridworld frames as RGB images, animated GIFs and PNGs, drawn in minigrid's look.
//!
//! Invariants:
//! - Tiles follow Farama minigrid 3.2.0's `render_tile` geometry (its `fill_coords` predicates,
//!   sampled at pixel centres) and colours, drawn without minigrid's 3x supersampling. Every
//!   pixel of a frame therefore has one of a small fixed set of colours ([`palette`]), so GIFs
//!   use one fixed global palette: deterministic, exact and fast.
//! - The cells of the agent's 7x7 view that it can see are lightened as minigrid's `highlight`
//!   does: `v + 0.3 * (255 - v)`, truncated.
//! - Text is drawn with a built-in 5x7 bitmap font (printable ASCII; anything else shows as `?`),
//!   so no font file is needed.
//! - [`render_frame`] never fails and never panics: sizes are clamped and a corrupt agent pose
//!   only leaves the agent undrawn. Writers return errors naming the file; files are written to
//!   a temporary file in the target directory and renamed into place only when complete.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::env::{Action, Env, VIEW_SIZE};
use metarim_core::grid::Pos;
use metarim_core::world::{Color, DoorState, Object, ObjectKind};

use crate::fsutil::AtomicFile;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// minigrid's `TILE_PIXELS`: the default tile side in pixels.
pub const DEFAULT_TILE_SIZE: u32 = 32;
/// Smallest tile side [`render_frame`] draws (smaller requests are raised to it).
pub const MIN_TILE_SIZE: u32 = 8;
/// Largest tile side [`render_frame`] draws (larger requests are lowered to it).
pub const MAX_TILE_SIZE: u32 = 128;

/// Grid lines (and minigrid's grey): `(100, 100, 100)`.
pub const GRID_LINE_RGB: Rgb = [100, 100, 100];
/// The agent's triangle.
pub const AGENT_RGB: Rgb = [255, 0, 0];
/// Lava.
pub const LAVA_RGB: Rgb = [255, 128, 0];
/// Empty floor and the annotation strip's background.
pub const BACKGROUND_RGB: Rgb = [0, 0, 0];
/// Caption text.
pub const TEXT_RGB: Rgb = [255, 255, 255];
/// An active RIM module's square in the annotation strip.
pub const ACTIVE_RGB: Rgb = [255, 255, 0];
/// An inactive RIM module's square outline in the annotation strip.
pub const INACTIVE_RGB: Rgb = GRID_LINE_RGB;

/// minigrid's `COLORS` value for `c`.
pub const fn color_rgb(c: Color) -> Rgb {
    match c {
        Color::Red => [255, 0, 0],
        Color::Green => [0, 255, 0],
        Color::Blue => [0, 0, 255],
        Color::Purple => [112, 39, 195],
        Color::Yellow => [255, 255, 0],
        Color::Grey => [100, 100, 100],
    }
}

/// minigrid's `highlight_img` on one colour: `v + 0.3 * (255 - v)` per channel, truncated.
pub fn highlight(c: Rgb) -> Rgb {
    c.map(|v| (f64::from(v) + 0.3 * f64::from(255 - v)) as u8)
}

/// `c / 2` per channel (minigrid's floor colour), truncated.
fn half(c: Rgb) -> Rgb {
    c.map(|v| v / 2)
}

/// `0.45 * c` per channel (the inside of a locked door), truncated.
fn locked_inside(c: Rgb) -> Rgb {
    c.map(|v| (0.45 * f64::from(v)) as u8)
}

/// Every colour [`render_frame`] can produce, without duplicates, in a fixed order: the base
/// colours, then their highlighted variants. Its length is well under 256.
pub fn palette() -> Vec<Rgb> {
    let mut base = vec![
        BACKGROUND_RGB,
        GRID_LINE_RGB,
        AGENT_RGB,
        LAVA_RGB,
        TEXT_RGB,
        ACTIVE_RGB,
        INACTIVE_RGB,
    ];
    for c in Color::ALL {
        let rgb = color_rgb(c);
        base.extend([rgb, half(rgb), locked_inside(rgb)]);
    }
    let mut out: Vec<Rgb> = Vec::with_capacity(2 * base.len());
    for c in base
        .iter()
        .copied()
        .chain(base.iter().map(|&c| highlight(c)))
    {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// An RGB image: `rgb` holds `width * height` pixels row-major, 3 bytes each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels, row-major, `[r, g, b]` each.
    pub rgb: Vec<u8>,
}

impl Frame {
    /// A `width x height` frame filled with `fill`.
    fn filled(width: u32, height: u32, fill: Rgb) -> Frame {
        let n = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(3 * n);
        for _ in 0..n {
            rgb.extend_from_slice(&fill);
        }
        Frame { width, height, rgb }
    }

    /// The pixel at `(x, y)`; `None` outside the frame (or when `rgb` is too short).
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        let p = self.rgb.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Set the pixel at `(x, y)`; no effect outside the frame.
    fn put(&mut self, x: u32, y: u32, c: Rgb) {
        if x >= self.width || y >= self.height {
            return;
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        if let Some(p) = self.rgb.get_mut(i..i + 3) {
            p.copy_from_slice(&c);
        }
    }

    /// Fill the `w x h` rectangle at `(x, y)`, clipped to the frame.
    fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, c: Rgb) {
        for yy in y..y.saturating_add(h).min(self.height) {
            for xx in x..x.saturating_add(w).min(self.width) {
                self.put(xx, yy, c);
            }
        }
    }

    /// An error unless the frame is non-empty and `rgb` holds exactly `width * height` pixels.
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            bail!(
                "frame is {}x{}: both sides must be positive",
                self.width,
                self.height
            );
        }
        let want = (self.width as usize)
            .checked_mul(self.height as usize)
            .and_then(|n| n.checked_mul(3));
        if want != Some(self.rgb.len()) {
            bail!(
                "frame is {}x{} but holds {} bytes of RGB (want 3 per pixel)",
                self.width,
                self.height,
                self.rgb.len()
            );
        }
        Ok(())
    }
}

/// What to draw below the grid: the mission, which RIM modules were active and a caption line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Annotation<'a> {
    /// The episode's mission (BabyAI's instruction), shown as `mission: ...` in as many rows as
    /// it needs at the frame's width: words are wrapped, never cut (a word longer than a row
    /// is split across rows); only text beyond 32 rows, far more than any BabyAI mission
    /// needs, is cut (ending in `...`). Empty: no mission rows.
    pub mission: &'a str,
    /// One square per module, filled when active. Squares shrink to fit the frame's width;
    /// when there are more modules than pixels, only the first ones are shown.
    pub active: &'a [bool],
    /// One line of text (see [`caption`]: the step, its action and reward), cut at the frame's
    /// right edge.
    pub caption: &'a str,
}

/// How [`render_frame`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenderOptions<'a> {
    /// Tile side in pixels; default [`DEFAULT_TILE_SIZE`], clamped to
    /// [`MIN_TILE_SIZE`]`..=`[`MAX_TILE_SIZE`].
    pub tile_size: u32,
    /// Lighten the cells the agent sees (minigrid's `highlight`); default on.
    pub highlight: bool,
    /// The annotation strip below the grid; default none. Its height depends only on the tile
    /// size, the grid's width and the mission's row count, so every annotated frame of one
    /// episode (one grid, one mission) has the same size.
    pub annotation: Option<Annotation<'a>>,
}

impl Default for RenderOptions<'_> {
    fn default() -> Self {
        RenderOptions {
            tile_size: DEFAULT_TILE_SIZE,
            highlight: true,
            annotation: None,
        }
    }
}

impl<'a> RenderOptions<'a> {
    /// The default drawing with the annotation strip: the mission, a square per module
    /// (filled when `active`) and the caption.
    pub fn annotated(mission: &'a str, active: &'a [bool], caption: &'a str) -> Self {
        RenderOptions {
            annotation: Some(Annotation {
                mission,
                active,
                caption,
            }),
            ..RenderOptions::default()
        }
    }
}

/// minigrid's name of an action (`"left"`, `"forward"`, ...).
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Left => "left",
        Action::Right => "right",
        Action::Forward => "forward",
        Action::Pickup => "pickup",
        Action::Drop => "drop",
        Action::Toggle => "toggle",
        Action::Done => "done",
    }
}

/// The usual caption: `"step 12  forward  reward 0.00"`; `action` is `None` for the initial
/// state (shown as `-`).
pub fn caption(step: u32, action: Option<Action>, reward: f32) -> String {
    let name = action.map_or("-", action_name);
    format!("step {step}  {name}  reward {reward:.2}")
}

/// The frame size [`render_frame`] gives for `env` and `opts`: `(width, height)`.
pub fn frame_size(env: &Env, opts: &RenderOptions) -> (u32, u32) {
    let t = opts.tile_size.clamp(MIN_TILE_SIZE, MAX_TILE_SIZE);
    let (gw, gh) = grid_dims(env);
    let strip = match &opts.annotation {
        Some(a) => Strip::new(t, gw * t, a.mission).height,
        None => 0,
    };
    (gw * t, gh * t + strip)
}

/// Draw `env`: the grid, the agent, the highlighted view and (optionally) the annotation strip.
pub fn render_frame(env: &Env, opts: &RenderOptions) -> Frame {
    let t = opts.tile_size.clamp(MIN_TILE_SIZE, MAX_TILE_SIZE);
    let (gw, gh) = grid_dims(env);
    let (width, height) = frame_size(env, opts);
    let mut frame = Frame::filled(width, height, BACKGROUND_RGB);
    let lit = if opts.highlight {
        visible_cells(env)
    } else {
        Vec::new()
    };
    let mut tile = Tile::new(t);
    for y in 0..gh {
        for x in 0..gw {
            let p = Pos::new(x as i32, y as i32);
            tile.clear();
            tile.grid_lines();
            if let Some(obj) = env.grid.get(p) {
                tile.object(obj);
            }
            if env.agent_pos == p {
                tile.agent(env.agent_dir);
            }
            if lit.get((y * gw + x) as usize).copied().unwrap_or(false) {
                tile.highlight();
            }
            tile.blit(&mut frame, x * t, y * t);
        }
    }
    if let Some(a) = &opts.annotation {
        Strip::new(t, width, a.mission).draw(&mut frame, gh * t, a);
    }
    frame
}

/// `(width, height)` of the grid in cells (at least 1 each, whatever the grid says).
fn grid_dims(env: &Env) -> (u32, u32) {
    let w = u32::try_from(env.grid.width()).unwrap_or(1).max(1);
    let h = u32::try_from(env.grid.height()).unwrap_or(1).max(1);
    (w, h)
}

/// Row-major `width * height` mask of the grid cells the agent sees: the view cells whose
/// observation is not "unseen" (`[0, 0, 0]`; every visible cell encodes a type of at least 1).
fn visible_cells(env: &Env) -> Vec<bool> {
    let (gw, gh) = grid_dims(env);
    let mut mask = vec![false; gw as usize * gh as usize];
    let obs = env.observation();
    for j in 0..VIEW_SIZE {
        for i in 0..VIEW_SIZE {
            if obs.get(j * VIEW_SIZE + i) == Some(&[0, 0, 0]) {
                continue;
            }
            let p = env.view_to_world(i, j);
            if env.grid.in_bounds(p) {
                if let Some(m) = mask.get_mut(p.y as usize * gw as usize + p.x as usize) {
                    *m = true;
                }
            }
        }
    }
    mask
}

/// One tile being drawn: `size x size` pixels, shapes given as minigrid's predicates over
/// tile coordinates in `[0, 1]`, tested at pixel centres.
struct Tile {
    size: u32,
    px: Vec<Rgb>,
}

impl Tile {
    fn new(size: u32) -> Tile {
        Tile {
            size,
            px: vec![BACKGROUND_RGB; size as usize * size as usize],
        }
    }

    fn clear(&mut self) {
        self.px.fill(BACKGROUND_RGB);
    }

    /// minigrid's `fill_coords`.
    fn fill(&mut self, c: Rgb, inside: impl Fn(f64, f64) -> bool) {
        let n = f64::from(self.size);
        let size = self.size as usize;
        for (k, p) in self.px.iter_mut().enumerate() {
            let (x, y) = ((k % size) as f64, (k / size) as f64);
            if inside((x + 0.5) / n, (y + 0.5) / n) {
                *p = c;
            }
        }
    }

    fn rect(&mut self, xmin: f64, xmax: f64, ymin: f64, ymax: f64, c: Rgb) {
        self.fill(c, |x, y| x >= xmin && x <= xmax && y >= ymin && y <= ymax);
    }

    fn circle(&mut self, cx: f64, cy: f64, r: f64, c: Rgb) {
        self.fill(c, |x, y| (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r);
    }

    /// minigrid's `point_in_line`: within `r` of the segment `p0 p1`.
    fn line(&mut self, p0: (f64, f64), p1: (f64, f64), r: f64, c: Rgb) {
        let (dx, dy) = (p1.0 - p0.0, p1.1 - p0.1);
        let len = (dx * dx + dy * dy).sqrt();
        let (ux, uy) = (dx / len, dy / len);
        self.fill(c, |x, y| {
            if x < p0.0.min(p1.0) - r
                || x > p0.0.max(p1.0) + r
                || y < p0.1.min(p1.1) - r
                || y > p0.1.max(p1.1) + r
            {
                return false;
            }
            let a = ((x - p0.0) * ux + (y - p0.1) * uy).clamp(0.0, len);
            let (qx, qy) = (p0.0 + a * ux, p0.1 + a * uy);
            ((x - qx) * (x - qx) + (y - qy) * (y - qy)).sqrt() <= r
        });
    }

    /// minigrid's grid lines: the top and left edges of every tile.
    fn grid_lines(&mut self) {
        self.rect(0.0, 0.031, 0.0, 1.0, GRID_LINE_RGB);
        self.rect(0.0, 1.0, 0.0, 0.031, GRID_LINE_RGB);
    }

    /// minigrid's `WorldObj.render` for each kind.
    fn object(&mut self, obj: &Object) {
        let c = color_rgb(obj.color);
        match obj.kind {
            ObjectKind::Wall | ObjectKind::Goal => self.rect(0.0, 1.0, 0.0, 1.0, c),
            ObjectKind::Floor => self.rect(0.031, 1.0, 0.031, 1.0, half(c)),
            ObjectKind::Lava => {
                self.rect(0.0, 1.0, 0.0, 1.0, LAVA_RGB);
                for i in 0..3 {
                    let ylo = 0.3 + 0.2 * f64::from(i);
                    let yhi = 0.4 + 0.2 * f64::from(i);
                    let black = BACKGROUND_RGB;
                    self.line((0.1, ylo), (0.3, yhi), 0.03, black);
                    self.line((0.3, yhi), (0.5, ylo), 0.03, black);
                    self.line((0.5, ylo), (0.7, yhi), 0.03, black);
                    self.line((0.7, yhi), (0.9, ylo), 0.03, black);
                }
            }
            ObjectKind::Door => match obj.door {
                DoorState::Open => {
                    self.rect(0.88, 1.0, 0.0, 1.0, c);
                    self.rect(0.92, 0.96, 0.04, 0.96, BACKGROUND_RGB);
                }
                DoorState::Locked => {
                    self.rect(0.0, 1.0, 0.0, 1.0, c);
                    self.rect(0.06, 0.94, 0.06, 0.94, locked_inside(c));
                    // The key slot.
                    self.rect(0.52, 0.75, 0.50, 0.56, c);
                }
                DoorState::Closed => {
                    self.rect(0.0, 1.0, 0.0, 1.0, c);
                    self.rect(0.04, 0.96, 0.04, 0.96, BACKGROUND_RGB);
                    self.rect(0.08, 0.92, 0.08, 0.92, c);
                    self.rect(0.12, 0.88, 0.12, 0.88, BACKGROUND_RGB);
                    // The handle.
                    self.circle(0.75, 0.50, 0.08, c);
                }
            },
            ObjectKind::Key => {
                self.rect(0.50, 0.63, 0.31, 0.88, c);
                self.rect(0.38, 0.50, 0.59, 0.66, c);
                self.rect(0.38, 0.50, 0.81, 0.88, c);
                self.circle(0.56, 0.28, 0.190, c);
                self.circle(0.56, 0.28, 0.064, BACKGROUND_RGB);
            }
            ObjectKind::Ball => self.circle(0.5, 0.5, 0.31, c),
            ObjectKind::Box => {
                self.rect(0.12, 0.88, 0.12, 0.88, c);
                self.rect(0.18, 0.82, 0.18, 0.82, BACKGROUND_RGB);
                self.rect(0.16, 0.84, 0.47, 0.53, c);
            }
            ObjectKind::Unseen | ObjectKind::Empty | ObjectKind::Agent => {}
        }
    }

    /// minigrid's agent: the triangle `(0.12, 0.19) (0.87, 0.50) (0.12, 0.81)` (pointing +x)
    /// rotated a quarter turn clockwise per direction step about the tile centre.
    fn agent(&mut self, dir: u8) {
        let (a, b, c) = ((0.12, 0.19), (0.87, 0.50), (0.12, 0.81));
        self.fill(AGENT_RGB, |x, y| {
            // minigrid's `rotate_fn` by `-dir * 90` degrees, exactly.
            let (rx, ry) = (x - 0.5, y - 0.5);
            let (ux, uy) = match dir & 3 {
                0 => (rx, ry),
                1 => (ry, -rx),
                2 => (-rx, -ry),
                _ => (-ry, rx),
            };
            in_triangle((ux + 0.5, uy + 0.5), a, b, c)
        });
    }

    fn highlight(&mut self) {
        for p in &mut self.px {
            *p = highlight(*p);
        }
    }

    fn blit(&self, frame: &mut Frame, x0: u32, y0: u32) {
        let size = self.size as usize;
        for (k, &c) in self.px.iter().enumerate() {
            frame.put(x0 + (k % size) as u32, y0 + (k / size) as u32, c);
        }
    }
}

/// minigrid's `point_in_triangle` (barycentric, `u + v < 1`).
fn in_triangle(p: (f64, f64), a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> bool {
    let v0 = (c.0 - a.0, c.1 - a.1);
    let v1 = (b.0 - a.0, b.1 - a.1);
    let v2 = (p.0 - a.0, p.1 - a.1);
    let dot = |u: (f64, f64), v: (f64, f64)| u.0 * v.0 + u.1 * v.1;
    let (d00, d01, d02) = (dot(v0, v0), dot(v0, v1), dot(v0, v2));
    let (d11, d12) = (dot(v1, v1), dot(v1, v2));
    let inv = 1.0 / (d00 * d11 - d01 * d01);
    let u = (d11 * d02 - d01 * d12) * inv;
    let v = (d00 * d12 - d01 * d02) * inv;
    u >= 0.0 && v >= 0.0 && u + v < 1.0
}

/// Layout of the annotation strip for one tile size, frame width and mission: the mission's
/// rows, then the module squares, then the caption.
struct Strip {
    /// Text scale (pixels per font pixel).
    scale: u32,
    /// Margin around and between the parts.
    pad: u32,
    /// Side of a module square when they fit.
    square: u32,
    /// The mission's text rows (none without a mission).
    mission: Vec<String>,
    /// Height of the mission's rows with the margin under them (0 without a mission).
    mission_height: u32,
    /// Total height.
    height: u32,
}

/// Font pixels between two rows of text.
const ROW_GAP: u32 = 3;

/// At most this many mission rows: enough for any BabyAI mission at any frame width the
/// levels have, while a pathological caller's text cannot make a frame arbitrarily tall (the
/// last row then ends in `...`).
const MAX_MISSION_ROWS: usize = 32;

impl Strip {
    fn new(tile: u32, width: u32, mission: &str) -> Strip {
        let scale = (tile / DEFAULT_TILE_SIZE).max(1);
        let pad = 4 * scale;
        let square = tile / 2;
        let columns = text_columns(width.saturating_sub(2 * pad), scale);
        let mut mission = if mission.trim().is_empty() {
            Vec::new()
        } else {
            wrap_words(&format!("mission: {}", mission.trim()), columns)
        };
        if mission.len() > MAX_MISSION_ROWS {
            mission.truncate(MAX_MISSION_ROWS);
            if let Some(last) = mission.last_mut() {
                let keep = columns.saturating_sub(3);
                *last = last.chars().take(keep).chain("...".chars()).collect();
            }
        }
        let rows = u32::try_from(mission.len()).unwrap_or(u32::MAX);
        let mission_height = if rows == 0 {
            0
        } else {
            rows.saturating_mul((GLYPH_H + ROW_GAP) * scale) - ROW_GAP * scale + pad
        };
        Strip {
            scale,
            pad,
            square,
            mission,
            mission_height,
            height: (pad + square + pad + GLYPH_H * scale + pad).saturating_add(mission_height),
        }
    }

    fn draw(&self, frame: &mut Frame, y0: u32, a: &Annotation) {
        for (k, row) in self.mission.iter().enumerate() {
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            let y =
                (y0 + self.pad).saturating_add(k.saturating_mul((GLYPH_H + ROW_GAP) * self.scale));
            draw_text(frame, self.pad, y, self.scale, row, TEXT_RGB);
        }
        // The squares and the caption go under the mission's rows.
        let y0 = y0.saturating_add(self.mission_height);
        let avail = frame.width.saturating_sub(2 * self.pad);
        let n = u32::try_from(a.active.len()).unwrap_or(u32::MAX);
        if n > 0 && avail > 0 {
            let gap = (self.square / 4).max(1);
            let (step, side) = if n.saturating_mul(self.square + gap) <= avail {
                (self.square + gap, self.square)
            } else {
                let step = (avail / n).max(1);
                (step, (step - step / 4).max(1))
            };
            let y = y0 + self.pad + self.square.saturating_sub(side) / 2;
            let border = (side / 8).max(1);
            for (k, &on) in a.active.iter().enumerate() {
                let x = self.pad.saturating_add((k as u32).saturating_mul(step));
                if x.saturating_add(side) > self.pad + avail {
                    break;
                }
                if on {
                    frame.fill_rect(x, y, side, side, ACTIVE_RGB);
                } else {
                    frame.fill_rect(x, y, side, side, INACTIVE_RGB);
                    if side > 2 * border {
                        let inner = side - 2 * border;
                        frame.fill_rect(x + border, y + border, inner, inner, BACKGROUND_RGB);
                    }
                }
            }
        }
        let ty = y0 + self.pad + self.square + self.pad;
        draw_text(frame, self.pad, ty, self.scale, a.caption, TEXT_RGB);
    }
}

/// Glyph width of the built-in font, in font pixels.
const GLYPH_W: u32 = 5;
/// Glyph height of the built-in font, in font pixels.
const GLYPH_H: u32 = 7;
/// Horizontal advance per character, in font pixels (one column of spacing).
const ADVANCE: u32 = GLYPH_W + 1;

/// The classic 5x7 LCD font for printable ASCII (`' '..='~'`): five columns per glyph, bit
/// `r` of a column is row `r` from the top.
const FONT_5X7: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5f, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7f, 0x14, 0x7f, 0x14], // #
    [0x24, 0x2a, 0x7f, 0x2a, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1c, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1c, 0x00], // )
    [0x14, 0x08, 0x3e, 0x08, 0x14], // *
    [0x08, 0x08, 0x3e, 0x08, 0x08], // +
    [0x00, 0x50, 0x30, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3e, 0x51, 0x49, 0x45, 0x3e], // 0
    [0x00, 0x42, 0x7f, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4b, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7f, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3c, 0x4a, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1e], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3e], // @
    [0x7e, 0x11, 0x11, 0x11, 0x7e], // A
    [0x7f, 0x49, 0x49, 0x49, 0x36], // B
    [0x3e, 0x41, 0x41, 0x41, 0x22], // C
    [0x7f, 0x41, 0x41, 0x22, 0x1c], // D
    [0x7f, 0x49, 0x49, 0x49, 0x41], // E
    [0x7f, 0x09, 0x09, 0x09, 0x01], // F
    [0x3e, 0x41, 0x49, 0x49, 0x7a], // G
    [0x7f, 0x08, 0x08, 0x08, 0x7f], // H
    [0x00, 0x41, 0x7f, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3f, 0x01], // J
    [0x7f, 0x08, 0x14, 0x22, 0x41], // K
    [0x7f, 0x40, 0x40, 0x40, 0x40], // L
    [0x7f, 0x02, 0x0c, 0x02, 0x7f], // M
    [0x7f, 0x04, 0x08, 0x10, 0x7f], // N
    [0x3e, 0x41, 0x41, 0x41, 0x3e], // O
    [0x7f, 0x09, 0x09, 0x09, 0x06], // P
    [0x3e, 0x41, 0x51, 0x21, 0x5e], // Q
    [0x7f, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7f, 0x01, 0x01], // T
    [0x3f, 0x40, 0x40, 0x40, 0x3f], // U
    [0x1f, 0x20, 0x40, 0x20, 0x1f], // V
    [0x3f, 0x40, 0x38, 0x40, 0x3f], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7f, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7f, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7f, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7f], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7e, 0x09, 0x01, 0x02], // f
    [0x0c, 0x52, 0x52, 0x52, 0x3e], // g
    [0x7f, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7d, 0x40, 0x00], // i
    [0x20, 0x40, 0x44, 0x3d, 0x00], // j
    [0x7f, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7f, 0x40, 0x00], // l
    [0x7c, 0x04, 0x18, 0x04, 0x78], // m
    [0x7c, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0x7c, 0x14, 0x14, 0x14, 0x08], // p
    [0x08, 0x14, 0x14, 0x18, 0x7c], // q
    [0x7c, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3f, 0x44, 0x40, 0x20], // t
    [0x3c, 0x40, 0x40, 0x20, 0x7c], // u
    [0x1c, 0x20, 0x40, 0x20, 0x1c], // v
    [0x3c, 0x40, 0x30, 0x40, 0x3c], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x0c, 0x50, 0x50, 0x50, 0x3c], // y
    [0x44, 0x64, 0x54, 0x4c, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x7f, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x08, 0x04, 0x08, 0x10, 0x08], // ~
];

/// The glyph of `ch`: printable ASCII as itself, anything else as `?`.
fn glyph(ch: char) -> &'static [u8; 5] {
    let i = (ch as u32).wrapping_sub(' ' as u32) as usize;
    FONT_5X7.get(i).unwrap_or(&FONT_5X7[(b'?' - b' ') as usize])
}

/// How many characters of the built-in font at `scale` fit in `width` pixels (at least 1: the
/// last character needs no spacing after it).
fn text_columns(width: u32, scale: u32) -> usize {
    let scale = scale.max(1);
    (width.saturating_add(scale) / (ADVANCE * scale)).max(1) as usize
}

/// `text` in rows of at most `columns` characters, broken at spaces; a word longer than a row
/// is split across rows, so no character is lost (runs of spaces become one).
fn wrap_words(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(1);
    let mut rows: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        let cur_len = cur.chars().count();
        if cur_len > 0 && cur_len + 1 + word.len() <= columns {
            cur.push(' ');
            cur.extend(word);
            continue;
        }
        if cur_len > 0 {
            rows.push(std::mem::take(&mut cur));
        }
        while word.len() > columns {
            rows.push(word.drain(..columns).collect());
        }
        cur = word.into_iter().collect();
    }
    if !cur.is_empty() {
        rows.push(cur);
    }
    rows
}

/// Draw one line of `text` with its top-left corner at `(x, y)`, `scale` pixels per font
/// pixel; characters that would cross the frame's right edge are left out.
fn draw_text(frame: &mut Frame, x: u32, y: u32, scale: u32, text: &str, c: Rgb) {
    let mut cx = x;
    for ch in text.chars() {
        if cx.saturating_add(GLYPH_W * scale) > frame.width {
            break;
        }
        for (col, bits) in glyph(ch).iter().enumerate() {
            for row in 0..GLYPH_H {
                if bits & (1 << row) != 0 {
                    let px = cx + col as u32 * scale;
                    frame.fill_rect(px, y + row * scale, scale, scale, c);
                }
            }
        }
        cx = cx.saturating_add(ADVANCE * scale);
    }
}

/// Write `frame` as an 8-bit RGB PNG at `path` (atomically).
pub fn write_png(path: impl AsRef<Path>, frame: &Frame) -> Result<()> {
    let path = path.as_ref();
    frame
        .check()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut file = AtomicFile::create(path)?;
    encode_png(&mut file, frame).with_context(|| format!("writing {} failed", path.display()))?;
    file.commit()
}

/// Encode a checked frame as PNG into `w`.
fn encode_png(w: &mut impl Write, frame: &Frame) -> Result<()> {
    let mut enc = png::Encoder::new(w, frame.width, frame.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&frame.rgb)?;
    writer.finish()?;
    Ok(())
}

/// Maps colours to indices of the fixed [`palette`]; any other colour goes to the nearest
/// palette entry (squared RGB distance, lowest index on ties), remembered for next time.
struct Quantizer {
    palette: Vec<Rgb>,
    index: HashMap<Rgb, u8>,
}

impl Quantizer {
    fn new() -> Quantizer {
        let palette: Vec<Rgb> = palette().into_iter().take(256).collect();
        let index = palette
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u8))
            .collect();
        Quantizer { palette, index }
    }

    fn index_of(&mut self, c: Rgb) -> u8 {
        if let Some(&i) = self.index.get(&c) {
            return i;
        }
        let dist = |p: &Rgb| -> u32 {
            p.iter()
                .zip(c)
                .map(|(&a, b)| (i32::from(a) - i32::from(b)).pow(2) as u32)
                .sum()
        };
        let i = (0..self.palette.len())
            .min_by_key(|&i| dist(&self.palette[i]))
            .unwrap_or(0) as u8;
        self.index.insert(c, i);
        i
    }

    fn flat(&self) -> Vec<u8> {
        self.palette.iter().flatten().copied().collect()
    }
}

/// An animated GIF being written, frame by frame, with the fixed global [`palette`], looping
/// forever. Created on a path, it appears there only when [`finish`](Self::finish) succeeds.
pub struct GifWriter<'a> {
    encoder: gif::Encoder<Sink<'a>>,
    name: String,
    width: u16,
    height: u16,
    delay_cs: u16,
    quantizer: Quantizer,
    indices: Vec<u8>,
    frames: usize,
}

/// Where a [`GifWriter`] writes.
enum Sink<'a> {
    File(AtomicFile),
    Writer(Box<dyn Write + 'a>),
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Writer(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Writer(w) => w.flush(),
        }
    }
}

impl GifWriter<'static> {
    /// Start a GIF at `path` of `width x height` frames shown `delay_cs` hundredths of a second
    /// each. Errors (naming `path`) when a side is 0 or above 65535 or the directory cannot
    /// be written.
    pub fn create(
        path: impl AsRef<Path>,
        width: u32,
        height: u32,
        delay_cs: u16,
    ) -> Result<GifWriter<'static>> {
        let path = path.as_ref();
        let (w, h) =
            gif_dims(width, height).with_context(|| format!("cannot write {}", path.display()))?;
        let file = AtomicFile::create(path)?;
        let name = path.display().to_string();
        GifWriter::start(Sink::File(file), name, w, h, delay_cs)
    }
}

impl<'a> GifWriter<'a> {
    /// Like [`create`](GifWriter::create), writing into `writer` instead of a file.
    pub fn new(
        writer: impl Write + 'a,
        width: u32,
        height: u32,
        delay_cs: u16,
    ) -> Result<GifWriter<'a>> {
        let name = "GIF stream".to_string();
        let (w, h) = gif_dims(width, height).with_context(|| format!("cannot write {name}"))?;
        GifWriter::start(Sink::Writer(Box::new(writer)), name, w, h, delay_cs)
    }

    fn start(
        sink: Sink<'a>,
        name: String,
        width: u16,
        height: u16,
        delay_cs: u16,
    ) -> Result<GifWriter<'a>> {
        let quantizer = Quantizer::new();
        let mut encoder = gif::Encoder::new(sink, width, height, &quantizer.flat())
            .map_err(gif_error)
            .with_context(|| format!("writing {name} failed"))?;
        encoder
            .set_repeat(gif::Repeat::Infinite)
            .map_err(gif_error)
            .with_context(|| format!("writing {name} failed"))?;
        Ok(GifWriter {
            encoder,
            name,
            width,
            height,
            delay_cs,
            quantizer,
            indices: Vec::new(),
            frames: 0,
        })
    }

    /// Append `frame`; errors when its size differs from the GIF's or writing fails.
    pub fn add(&mut self, frame: &Frame) -> Result<()> {
        frame
            .check()
            .with_context(|| format!("cannot add a frame to {}", self.name))?;
        if (frame.width, frame.height) != (u32::from(self.width), u32::from(self.height)) {
            bail!(
                "cannot add a {}x{} frame to {}, which is {}x{}",
                frame.width,
                frame.height,
                self.name,
                self.width,
                self.height
            );
        }
        self.indices.clear();
        for p in frame.rgb.chunks_exact(3) {
            let i = self.quantizer.index_of([p[0], p[1], p[2]]);
            self.indices.push(i);
        }
        let gif_frame = gif::Frame {
            width: self.width,
            height: self.height,
            delay: self.delay_cs,
            buffer: Cow::Borrowed(&self.indices),
            ..gif::Frame::default()
        };
        self.encoder
            .write_frame(&gif_frame)
            .map_err(gif_error)
            .with_context(|| format!("writing {} failed", self.name))?;
        self.frames += 1;
        Ok(())
    }

    /// Frames added so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Write the trailer and, for a file, move it into place. Errors when no frame was added
    /// (a GIF needs one), leaving no file behind.
    pub fn finish(self) -> Result<()> {
        if self.frames == 0 {
            bail!("cannot write {}: no frames were added", self.name);
        }
        let name = self.name;
        let sink = self
            .encoder
            .into_inner()
            .map_err(gif_error)
            .with_context(|| format!("writing {name} failed"))?;
        match sink {
            Sink::File(f) => f.commit(),
            Sink::Writer(mut w) => w.flush().with_context(|| format!("writing {name} failed")),
        }
    }
}

/// The GIF encoder's error with its cause said once: `gif::EncodingError` displays its I/O
/// or format error and also reports it as its source, which an error chain prints twice.
fn gif_error(e: gif::EncodingError) -> anyhow::Error {
    match e {
        gif::EncodingError::Io(io) => io.into(),
        other => anyhow!("{other}"),
    }
}

/// GIF sides as `u16`, or an error.
fn gif_dims(width: u32, height: u32) -> Result<(u16, u16)> {
    match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("GIF size {width}x{height} is not within 1..=65535 on each side"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_glyphs_fit_and_differ() {
        for (k, g) in FONT_5X7.iter().enumerate() {
            let ch = char::from(b' ' + k as u8);
            assert!(g.iter().all(|c| c & 0x80 == 0), "{ch:?} taller than 7 rows");
            assert_eq!(g.iter().all(|&c| c == 0), ch == ' ', "{ch:?} blank or not");
            for (k2, g2) in FONT_5X7.iter().enumerate().skip(k + 1) {
                assert_ne!(g, g2, "{ch:?} and {:?} look the same", b' ' + k2 as u8);
            }
        }
        assert_eq!(glyph('é'), glyph('?'));
        assert_eq!(glyph('\n'), glyph('?'));
    }

    #[test]
    fn palette_is_small_and_closed_under_highlight() {
        let p = palette();
        assert!(p.len() <= 256);
        for c in Color::ALL {
            assert!(p.contains(&highlight(color_rgb(c))));
        }
        assert_eq!(highlight([0, 0, 0]), [76, 76, 76]);
        assert_eq!(highlight(AGENT_RGB), [255, 76, 76]);
        assert_eq!(locked_inside([255, 0, 0]), [114, 0, 0]);
    }

    #[test]
    fn missions_wrap_at_spaces_and_lose_no_character() {
        let m = "mission: pick up the red ball after you open the grey door";
        let rows = wrap_words(m, 20);
        assert!(rows.iter().all(|r| r.chars().count() <= 20), "{rows:?}");
        assert_eq!(rows.join(" "), m);
        assert_eq!(rows[0], "mission: pick up the");
        // A word longer than a row is split, not cut.
        let rows = wrap_words("abcdefghij xy", 4);
        assert_eq!(rows, ["abcd", "efgh", "ij", "xy"]);
        assert!(wrap_words("   ", 5).is_empty());
        assert_eq!(wrap_words("a b", 0), ["a", "b"]);
        // 256 pixels at scale 1 hold 42 characters of 6 pixels (the last needs 5).
        assert_eq!(text_columns(256, 1), 42);
        assert_eq!(text_columns(0, 1), 1);
        // A pathological mission stops at the row limit instead of growing the frame.
        let huge = "word ".repeat(10_000);
        let strip = Strip::new(DEFAULT_TILE_SIZE, 256, &huge);
        assert_eq!(strip.mission.len(), MAX_MISSION_ROWS);
        assert!(strip.mission[MAX_MISSION_ROWS - 1].ends_with("..."));
        assert!(strip.mission.iter().all(|r| r.chars().count() <= 42));
    }

    #[test]
    fn frames_show_the_mission_rows_and_the_action() {
        use metarim_core::levels::Level;
        let mut env = Env::new(8, 8).unwrap();
        Level::from_id("BabyAI-GoToLocal-v0")
            .unwrap()
            .reset(&mut env, 3)
            .unwrap();
        // BabyAI's long missions must stay readable: set one longer than a row.
        let long = "pick up the red ball after you open the grey door";
        env.mission.clear();
        env.mission.push_str(long).unwrap();
        let cap = caption(7, Some(Action::Toggle), 0.0);
        let active = [true, false];
        let opts = RenderOptions::annotated(env.mission.as_str(), &active, &cap);
        let f = render_frame(&env, &opts);
        assert_eq!(frame_size(&env, &opts), (f.width, f.height));
        let strip = Strip::new(DEFAULT_TILE_SIZE, f.width, long);
        assert_eq!(strip.mission.len(), 2, "{:?}", strip.mission);
        assert_eq!(strip.mission.join(" "), format!("mission: {long}"));
        // Each mission row, then the caption, drawn as the font draws them alone.
        let grid_h = 8 * DEFAULT_TILE_SIZE;
        let row_h = (GLYPH_H + ROW_GAP) * strip.scale;
        let mut expect: Vec<(u32, &str)> = strip
            .mission
            .iter()
            .enumerate()
            .map(|(k, r)| (grid_h + strip.pad + k as u32 * row_h, r.as_str()))
            .collect();
        let squares_y = grid_h + strip.pad + 2 * row_h - ROW_GAP * strip.scale + strip.pad;
        expect.push((squares_y + strip.square + strip.pad, cap.as_str()));
        assert!(cap.contains("toggle"));
        for (y, text) in expect {
            let mut alone = Frame::filled(f.width, GLYPH_H, BACKGROUND_RGB);
            draw_text(&mut alone, strip.pad, 0, 1, text, TEXT_RGB);
            for dy in 0..GLYPH_H {
                for x in 0..f.width {
                    assert_eq!(
                        f.pixel(x, y + dy),
                        alone.pixel(x, dy),
                        "{text:?} at ({x}, {})",
                        y + dy
                    );
                }
            }
        }
        // Without a mission the strip is as before: no mission rows.
        let plain = Strip::new(DEFAULT_TILE_SIZE, f.width, "");
        assert!(plain.mission.is_empty());
        assert_eq!(
            f.height - grid_h - plain.height,
            2 * row_h - ROW_GAP * strip.scale + strip.pad
        );
    }

    #[test]
    fn quantizer_maps_palette_exactly_and_others_to_nearest() {
        let mut q = Quantizer::new();
        for (i, &c) in palette().iter().enumerate() {
            assert_eq!(q.index_of(c), i as u8);
        }
        let near_red = q.index_of([250, 3, 2]);
        assert_eq!(palette()[near_red as usize], [255, 0, 0]);
    }
}
