//! `host::render`: frame geometry and colours, the annotation strip, and the GIF and PNG
//! writers (decoded back and compared pixel for pixel; errors instead of panics).

use std::fs::{self, File};
use std::io::BufReader;
use std::path::PathBuf;

use host::render::{
    caption, color_rgb, frame_size, highlight, palette, render_frame, write_png, Frame, GifWriter,
    RenderOptions, ACTIVE_RGB, AGENT_RGB, BACKGROUND_RGB, DEFAULT_TILE_SIZE, GRID_LINE_RGB,
    INACTIVE_RGB, LAVA_RGB, TEXT_RGB,
};
use metarim_core::env::{Action, Env};
use metarim_core::grid::Pos;
use metarim_core::levels::Level;
use metarim_core::rng::Pcg32;
use metarim_core::world::{Color, DoorState, Object, ObjectKind};

const T: u32 = DEFAULT_TILE_SIZE;

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metarim-render-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn go_to_local(seed: u64) -> Env {
    let mut env = Env::new(8, 8).unwrap();
    Level::from_id("BabyAI-GoToLocal-v0")
        .unwrap()
        .reset(&mut env, seed)
        .unwrap();
    env
}

fn no_highlight() -> RenderOptions<'static> {
    RenderOptions {
        highlight: false,
        ..RenderOptions::default()
    }
}

/// The pixel at tile coordinates `(u, v)` in `[0, 1]` of cell `p`.
fn at(frame: &Frame, p: Pos, u: f64, v: f64) -> [u8; 3] {
    let x = p.x as u32 * T + (u * f64::from(T)) as u32;
    let y = p.y as u32 * T + (v * f64::from(T)) as u32;
    frame.pixel(x, y).unwrap()
}

/// Every pixel of cell `p`.
fn tile_pixels(frame: &Frame, p: Pos) -> Vec<[u8; 3]> {
    let mut out = Vec::new();
    for y in 0..T {
        for x in 0..T {
            out.push(frame.pixel(p.x as u32 * T + x, p.y as u32 * T + y).unwrap());
        }
    }
    out
}

#[test]
fn frame_has_one_tile_per_cell() {
    let env = go_to_local(1);
    let f = render_frame(&env, &RenderOptions::default());
    assert_eq!((f.width, f.height), (8 * T, 8 * T));
    assert_eq!(f.rgb.len(), (8 * T * 8 * T * 3) as usize);
    f.check().unwrap();
    let small = render_frame(
        &env,
        &RenderOptions {
            tile_size: 12,
            ..RenderOptions::default()
        },
    );
    assert_eq!((small.width, small.height), (96, 96));
    // Out-of-range tile sizes are clamped, not trusted.
    let tiny = render_frame(
        &env,
        &RenderOptions {
            tile_size: 0,
            ..RenderOptions::default()
        },
    );
    assert_eq!(tiny.width, 8 * host::render::MIN_TILE_SIZE);
}

#[test]
fn agent_is_a_red_triangle_pointing_its_way() {
    let mut env = go_to_local(3);
    for dir in 0..4u8 {
        env.agent_dir = dir;
        let plain = render_frame(&env, &no_highlight());
        let lit = render_frame(&env, &RenderOptions::default());
        let p = env.agent_pos;
        assert_eq!(at(&plain, p, 0.5, 0.5), AGENT_RGB, "dir {dir}");
        // The agent's own cell is always visible, hence highlighted.
        assert_eq!(at(&lit, p, 0.5, 0.5), highlight(AGENT_RGB), "dir {dir}");
        let (dx, dy) = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][dir as usize];
        let tip = at(&plain, p, 0.5 + 0.25 * dx, 0.5 + 0.25 * dy);
        let side = at(&plain, p, 0.5 - 0.35 * dy, 0.5 + 0.35 * dx);
        assert_eq!(tip, AGENT_RGB, "dir {dir}: tip");
        assert_ne!(side, AGENT_RGB, "dir {dir}: side");
    }
}

#[test]
fn walls_are_grey_and_only_seen_cells_are_lit() {
    let env = go_to_local(5);
    let plain = render_frame(&env, &no_highlight());
    for p in [Pos::new(0, 0), Pos::new(7, 3), Pos::new(4, 7)] {
        assert!(tile_pixels(&plain, p).iter().all(|&c| c == GRID_LINE_RGB));
    }
    let lit = render_frame(&env, &RenderOptions::default());
    let (dx, dy) = env.dir_vec();
    let mut n_lit = 0;
    for y in 0..8 {
        for x in 0..8 {
            let p = Pos::new(x, y);
            let same = tile_pixels(&plain, p) == tile_pixels(&lit, p);
            let lightened = tile_pixels(&plain, p)
                .iter()
                .map(|&c| highlight(c))
                .eq(tile_pixels(&lit, p));
            assert!(same || lightened, "{p:?} neither plain nor highlighted");
            if lightened && !same {
                n_lit += 1;
                // Lit cells lie in the 7x7 view: 0..=6 ahead, at most 3 to either side.
                let (rx, ry) = (p.x - env.agent_pos.x, p.y - env.agent_pos.y);
                let ahead = rx * dx + ry * dy;
                let side = rx * -dy + ry * dx;
                assert!((0..=6).contains(&ahead) && side.abs() <= 3, "{p:?} lit");
            }
        }
    }
    // At least the agent's cell and the cell in front are seen (GoToLocal is one open room).
    assert!(n_lit >= 2);
    let front = env.front_pos();
    assert_eq!(at(&lit, front, 0.0, 0.0), highlight(GRID_LINE_RGB));
}

#[test]
fn objects_are_drawn_like_minigrid() {
    let mut env = Env::new(8, 8).unwrap();
    env.grid.wall_rect(0, 0, 8, 8);
    let put = |env: &mut Env, x, y, o| env.grid.set(Pos::new(x, y), Some(o)).unwrap();
    put(&mut env, 2, 1, Object::new(ObjectKind::Ball, Color::Blue));
    put(&mut env, 3, 1, Object::new(ObjectKind::Box, Color::Purple));
    put(&mut env, 4, 1, Object::new(ObjectKind::Key, Color::Yellow));
    put(&mut env, 5, 1, Object::goal());
    put(&mut env, 6, 1, Object::lava());
    put(&mut env, 2, 3, Object::door(Color::Red, DoorState::Locked));
    put(
        &mut env,
        3,
        3,
        Object::door(Color::Green, DoorState::Closed),
    );
    put(&mut env, 4, 3, Object::door(Color::Grey, DoorState::Open));
    put(&mut env, 5, 3, Object::new(ObjectKind::Floor, Color::Blue));
    let f = render_frame(&env, &no_highlight());
    let c = |x, y, u, v| at(&f, Pos::new(x, y), u, v);
    // Ball: a filled circle.
    assert_eq!(c(2, 1, 0.5, 0.5), color_rgb(Color::Blue));
    assert_eq!(c(2, 1, 0.1, 0.1), BACKGROUND_RGB);
    // Box: an outline with a slit, hollow elsewhere.
    assert_eq!(c(3, 1, 0.14, 0.3), color_rgb(Color::Purple));
    assert_eq!(c(3, 1, 0.5, 0.5), color_rgb(Color::Purple));
    assert_eq!(c(3, 1, 0.5, 0.3), BACKGROUND_RGB);
    // Key: shaft in colour, hole in the ring.
    assert_eq!(c(4, 1, 0.56, 0.7), color_rgb(Color::Yellow));
    assert_eq!(c(4, 1, 0.56, 0.28), BACKGROUND_RGB);
    // Goal covers its grid lines; lava is orange with black waves.
    let goal = tile_pixels(&f, Pos::new(5, 1));
    assert!(goal.iter().all(|&p| p == color_rgb(Color::Green)));
    let lava = tile_pixels(&f, Pos::new(6, 1));
    assert!(lava.iter().filter(|&&p| p == LAVA_RGB).count() > lava.len() / 2);
    assert!(lava.contains(&BACKGROUND_RGB));
    // Locked door: darker inside, full colour on the frame.
    assert_eq!(c(2, 3, 0.03, 0.5), color_rgb(Color::Red));
    assert_eq!(c(2, 3, 0.3, 0.3), [114, 0, 0]);
    // Closed door: black bands, handle in colour.
    assert_eq!(c(3, 3, 0.06, 0.5), BACKGROUND_RGB);
    assert_eq!(c(3, 3, 0.75, 0.5), color_rgb(Color::Green));
    assert_eq!(c(3, 3, 0.4, 0.5), BACKGROUND_RGB);
    // Open door: a thin strip at the right edge.
    assert_eq!(c(4, 3, 0.9, 0.5), GRID_LINE_RGB);
    assert_eq!(c(4, 3, 0.5, 0.5), BACKGROUND_RGB);
    // Floor: half intensity.
    assert_eq!(c(5, 3, 0.5, 0.5), [0, 0, 127]);
    // Empty cells: black with grey top and left grid lines.
    assert_eq!(c(5, 5, 0.0, 0.5), GRID_LINE_RGB);
    assert_eq!(c(5, 5, 0.5, 0.0), GRID_LINE_RGB);
    assert_eq!(c(5, 5, 0.5, 0.5), BACKGROUND_RGB);
    assert_eq!(c(5, 5, 0.99, 0.99), BACKGROUND_RGB);
}

#[test]
fn every_pixel_is_in_the_fixed_palette() {
    // The GIF palette is exact only if this holds: every level, a few seeds, random walks,
    // highlight and annotation on.
    let pal: std::collections::HashSet<[u8; 3]> = palette().into_iter().collect();
    assert!(pal.len() <= 256);
    let active = [true, false, true, true, false, false];
    let mut rng = Pcg32::new(7);
    for level in Level::all() {
        let (w, h) = level.grid_size();
        let mut env = Env::new(w, h).unwrap();
        for seed in 0..2 {
            level.reset(&mut env, seed).unwrap();
            for step in 0..4u32 {
                let action = Action::ALL[rng.below(7) as usize];
                let cap = caption(step, Some(action), 0.5);
                let opts = RenderOptions {
                    tile_size: 8 + 3 * step,
                    ..RenderOptions::annotated(env.mission.as_str(), &active, &cap)
                };
                let f = render_frame(&env, &opts);
                for p in f.rgb.chunks_exact(3) {
                    let c = [p[0], p[1], p[2]];
                    assert!(pal.contains(&c), "{}: {c:?} not in palette", level.id());
                }
                env.step(action);
            }
        }
    }
}

#[test]
fn annotation_strip_shows_modules_and_caption() {
    let env = go_to_local(2);
    let active = [true, false, false, true];
    let cap = caption(12, Some(Action::Forward), 0.25);
    assert_eq!(cap, "step 12  forward  reward 0.25");
    let opts = |active, caption| RenderOptions::annotated("", active, caption);
    let f = render_frame(&env, &opts(&active, &cap));
    assert_eq!(f.width, 8 * T);
    assert!(f.height > 8 * T);
    assert_eq!(frame_size(&env, &opts(&active, &cap)), (f.width, f.height));
    // Same size whatever the module count or caption, so frames of one episode fit one GIF.
    let many = vec![true; 500];
    let g = render_frame(&env, &opts(&many, ""));
    assert_eq!((g.width, g.height), (f.width, f.height));
    // The grid part is unchanged by the strip.
    let plain = render_frame(&env, &RenderOptions::default());
    assert_eq!(&f.rgb[..plain.rgb.len()], &plain.rgb[..]);
    let strip: Vec<[u8; 3]> = (8 * T..f.height)
        .flat_map(|y| (0..f.width).map(move |x| (x, y)))
        .map(|(x, y)| f.pixel(x, y).unwrap())
        .collect();
    let count = |c| strip.iter().filter(|&&p| p == c).count();
    // Two active squares, two outlined ones, and some text.
    let side = (T / 2) as usize;
    assert_eq!(count(ACTIVE_RGB), 2 * side * side);
    assert!(count(INACTIVE_RGB) > 0 && count(INACTIVE_RGB) < 2 * side * side);
    assert!(count(TEXT_RGB) > 0);
    // No caption, no text; no modules, no squares.
    let quiet = render_frame(&env, &opts(&[], ""));
    let strip_quiet = &quiet.rgb[plain.rgb.len()..];
    assert!(strip_quiet.iter().all(|&b| b == 0));
}

#[test]
fn gif_round_trips_exactly() {
    let dir = scratch("gif");
    let path = dir.join("episode.gif");
    let level = Level::from_id("BabyAI-GoToLocal-v0").unwrap();
    let mut env = Env::new(8, 8).unwrap();
    level.reset(&mut env, 4).unwrap();
    let active = [true, false, true];
    let mut frames = Vec::new();
    for (step, action) in [None, Some(Action::Left), Some(Action::Forward)]
        .into_iter()
        .enumerate()
    {
        if let Some(a) = action {
            env.step(a);
        }
        let cap = caption(step as u32, action, 0.0);
        let opts = RenderOptions::annotated(env.mission.as_str(), &active, &cap);
        frames.push(render_frame(&env, &opts));
    }
    let (w, h) = (frames[0].width, frames[0].height);
    let mut gif = GifWriter::create(&path, w, h, 25).unwrap();
    for f in &frames {
        gif.add(f).unwrap();
    }
    assert_eq!(gif.frames(), 3);
    // Nothing at the final path until finish.
    assert!(!path.exists());
    gif.finish().unwrap();
    assert!(path.exists());

    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts
        .read_info(BufReader::new(File::open(&path).unwrap()))
        .unwrap();
    assert_eq!((u32::from(dec.width()), u32::from(dec.height())), (w, h));
    let mut decoded = Vec::new();
    while let Some(f) = dec.read_next_frame().unwrap() {
        assert_eq!((u32::from(f.width), u32::from(f.height)), (w, h));
        assert_eq!(f.delay, 25);
        let rgb: Vec<u8> = f
            .buffer
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        decoded.push(rgb);
    }
    assert_eq!(decoded.len(), 3);
    for (d, f) in decoded.iter().zip(&frames) {
        assert!(d == &f.rgb, "decoded frame differs from the drawn one");
    }
    // Only the GIF is left in the directory: no temporary file.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

    // Into a writer, the same bytes.
    let mut bytes = Vec::new();
    let mut gif = GifWriter::new(&mut bytes, w, h, 25).unwrap();
    for f in &frames {
        gif.add(f).unwrap();
    }
    gif.finish().unwrap();
    assert_eq!(bytes, fs::read(&path).unwrap());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn png_round_trips_exactly() {
    let dir = scratch("png");
    let path = dir.join("frame.png");
    let f = render_frame(&go_to_local(9), &RenderOptions::default());
    write_png(&path, &f).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(File::open(&path).unwrap()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (f.width, f.height));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(&buf[..info.buffer_size()], &f.rgb[..]);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_paths_and_frames_are_errors_not_panics() {
    let dir = scratch("errors");
    let missing = dir.join("no/such/dir/out.gif");
    let err = GifWriter::create(&missing, 64, 64, 10).err().unwrap();
    assert!(format!("{err:#}").contains("out.gif"), "{err:#}");
    let f = render_frame(&go_to_local(1), &RenderOptions::default());
    let err = write_png(dir.join("no/such/dir/out.png"), &f).unwrap_err();
    assert!(format!("{err:#}").contains("out.png"), "{err:#}");
    assert!(write_png(&dir, &f).is_err(), "a directory is not a file");

    // Sizes GIF cannot hold.
    assert!(GifWriter::create(dir.join("a.gif"), 0, 10, 10).is_err());
    assert!(GifWriter::create(dir.join("b.gif"), 70_000, 10, 10).is_err());

    // Frames of the wrong size or with the wrong byte count.
    let mut gif = GifWriter::create(dir.join("c.gif"), f.width, f.height, 10).unwrap();
    let small = render_frame(
        &go_to_local(1),
        &RenderOptions {
            tile_size: 16,
            ..RenderOptions::default()
        },
    );
    assert!(gif.add(&small).is_err());
    let short = Frame {
        rgb: f.rgb[..f.rgb.len() - 1].to_vec(),
        ..f.clone()
    };
    assert!(gif.add(&short).is_err());
    assert!(write_png(dir.join("short.png"), &short).is_err());
    // No frame added: finishing is an error and leaves nothing behind.
    assert!(gif.finish().is_err());
    // Dropped unfinished: nothing behind either.
    let mut gif = GifWriter::create(dir.join("d.gif"), f.width, f.height, 10).unwrap();
    gif.add(&f).unwrap();
    drop(gif);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    // A corrupt pose only leaves the agent out.
    let mut env = go_to_local(1);
    env.agent_pos = Pos::new(-5, 99);
    env.agent_dir = 200;
    let g = render_frame(&env, &RenderOptions::default());
    assert_eq!((g.width, g.height), (f.width, f.height));
    fs::remove_dir_all(&dir).unwrap();
}
