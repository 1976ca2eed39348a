//! The replay reports what is wrong with a bad trace instead of panicking: corrupted copies of a
//! recorded episode must fail at the right step and field, with a readable message.

use flate2::read::MultiGzDecoder;
use host::trace::{read_episodes, replay_reader, write_episode, Episode, Failure};
use metarim_tests::trace_path;

fn first_episode() -> Episode {
    let file = std::fs::File::open(trace_path()).expect("vendored trace");
    let episodes = read_episodes(MultiGzDecoder::new(file)).expect("all lines are episodes");
    assert_eq!(episodes.len(), 450);
    episodes.into_iter().next().expect("one episode")
}

/// Replay `lines` and return the failure messages and the summary line.
fn replay(lines: &str) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let summary = replay_reader(lines.as_bytes(), "test", |f: &Failure| {
        failures.push(f.to_string())
    })
    .expect("in-memory input is readable");
    (failures, summary.to_string())
}

fn line(ep: &Episode) -> String {
    let mut buf = Vec::new();
    write_episode(&mut buf, ep).expect("serialise");
    String::from_utf8(buf).expect("JSON is UTF-8")
}

#[test]
fn corrupted_episodes_fail_with_clear_messages() {
    let ep = first_episode();
    assert!(ep.steps.len() > 3);

    let mut bad_obs = ep.clone();
    bad_obs.steps[2].obs[10] = [9, 0, 0];
    let mut bad_reward = ep.clone();
    let last = bad_reward.steps.len() - 1;
    bad_reward.steps[last].reward += 0.01;
    let mut bad_level = ep.clone();
    bad_level.env_id = "BabyAI-NoSuchLevel-v0".into();
    let mut big_code = ep.clone();
    big_code.grid[9] = [300, 0, 0];
    let mut bad_type = ep.clone();
    bad_type.grid[9] = [11, 0, 0];
    let mut bad_action = ep.clone();
    bad_action.steps[0].action = 9;
    let mut bad_final = ep.clone();
    bad_final.final_grid[9] = [2, 5, 0];
    let mut bad_size = ep.clone();
    bad_size.grid.pop();
    let mut blocked = ep.clone();
    blocked.agent_pos = [0, 0];

    let input = [
        line(&ep),
        line(&bad_obs),
        line(&bad_reward),
        line(&bad_level),
        line(&big_code),
        line(&bad_type),
        line(&bad_action),
        line(&bad_final),
        line(&bad_size),
        line(&blocked),
        "{not json\n".into(),
        "\n".into(),
        "{\"env_id\": \"x\"}\n".into(),
    ]
    .concat();
    let (failures, summary) = replay(&input);
    for f in &failures {
        eprintln!("{f}");
    }
    assert_eq!(summary, "replay: 1/12 episodes match");
    let expect = [
        "episode=1 env=BabyAI-GoToRedBallGrey-v0 seed=0 step=3 field=obs[i=3,j=1]",
        "episode=2 env=BabyAI-GoToRedBallGrey-v0 seed=0 step=",
        "unknown level id \"BabyAI-NoSuchLevel-v0\"",
        "grid cell 9 (x=1, y=1): cell code [300,0,0] has a value outside 0..=255",
        "grid cell 9 (x=1, y=1): cell code [11,0,0]: cell code out of range: type=11",
        "step=1 field=action",
        "field=final_grid[x=1,y=1] expected=[2,5,0] got=[1,0,0]",
        "grid has 63 cells, expected width*height = 8*8",
        "agent position (0, 0) is outside the grid or blocked",
        "line=11: not a valid trace episode",
        "line=13: not a valid trace episode: missing field",
    ];
    assert_eq!(failures.len(), expect.len());
    for (f, e) in failures.iter().zip(expect) {
        assert!(f.starts_with("mismatch: "), "{f}");
        assert!(f.contains(e), "{f:?} should contain {e:?}");
    }
    assert!(failures[1].contains("field=reward"), "{}", failures[1]);
}

#[test]
fn dumped_states_round_trip() {
    for level in host::levels::all() {
        let mut env = metarim_core::env::Env::new(8, 8).expect("8x8");
        let ep = host::dump::generate(level.id(), 5, &mut env).expect("generates");
        let again = host::trace::parse_episode(&line(&ep)).expect("parses back");
        assert_eq!(again, ep);
        host::trace::replay_episode(0, &ep).unwrap_or_else(|m| panic!("{m}"));
    }
}

/// `n` bytes of `b'x'` without a newline, produced on the fly (no allocation).
fn junk(n: u64) -> std::io::Take<std::io::Repeat> {
    std::io::Read::take(std::io::repeat(b'x'), n)
}

/// A line longer than the limit (16 MiB) stops the replay with an error naming the line and
/// the limit, without reading the rest of it: an endless line is refused as fast as a 64 MiB
/// one. Lines below the limit, however padded, still replay.
#[test]
fn overlong_lines_are_refused_with_bounded_memory() {
    let ep = first_episode();
    let good = line(&ep);
    for n in [64u64 << 20, u64::MAX] {
        let input = std::io::BufReader::new(std::io::Read::chain(good.as_bytes(), junk(n)));
        let mut failures = 0;
        let e = replay_reader(input, "test", |_| failures += 1).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("at line 2"), "{e}");
        assert!(e.contains("16 MiB"), "{e}");
        assert_eq!(failures, 0);
        let input = std::io::Read::chain(good.as_bytes(), junk(n));
        let e = format!("{:#}", read_episodes(input).unwrap_err());
        assert!(e.contains("line 2") && e.contains("16 MiB"), "{e}");
    }
    // An episode padded to 12 MiB is within the limit (and replays).
    let padded = format!("{}{}\n", good.trim_end(), " ".repeat(12 << 20));
    let (failures, summary) = replay(&padded);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(summary, "replay: 1/1 episodes match");
    // CRLF line ends are accepted as before.
    let (failures, summary) = replay(&good.replace('\n', "\r\n"));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(summary, "replay: 1/1 episodes match");
}
