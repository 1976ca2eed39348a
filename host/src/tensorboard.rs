//! TensorBoard event files: the per-update scalars of `train.jsonl`, written where TensorBoard
//! (`tensorboard --logdir runs`) and its readers (`tbparse`, `EventAccumulator`) find them.
//!
//! Format (TensorFlow's `TFRecord` of `Event` protocol buffers, as TensorBoard reads it):
//! each record is `u64 length (LE) | u32 masked CRC-32C of the length bytes | data |
//! u32 masked CRC-32C of data`, the data an `Event { double wall_time = 1; int64 step = 2;
//! string file_version = 3; Summary summary = 5 }` with `Summary { repeated Value value = 1 }`,
//! `Value { string tag = 1; float simple_value = 2 }`. The first record carries only
//! `file_version = "brain.Event:2"`. Nothing here needs protobuf or TensorFlow: the few fields
//! are encoded by hand.
//!
//! Invariants:
//! - A run directory holds one event file, [`EVENT_FILE_PREFIX`]`*`, whose steps are the frame
//!   counts of the `train.jsonl` lines, each once, in order: a resumed run rebuilds the file
//!   from its log (cut back to the checkpoint), so a killed process leaves neither duplicated
//!   nor missing steps behind.
//! - The scalars of a step are those of its log line ([`scalars`]): every number of the line
//!   but `frames` (the step) under its own name, and each element `i` of a list of numbers
//!   (`module_activity`) as `NAME/i`, each number of an object of numbers
//!   (`grad_norm_by_role`) as `NAME/KEY`: the same names as the CSV columns.
//! - Values are `f32` (TensorBoard's `simple_value`), the log's `f64` rounded to nearest.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use metarim_core::crc::crc32c;
use serde_json::Value;

/// The start of every event file's name (TensorBoard looks for `tfevents` in names).
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";

/// `file_version` of the first record, as TensorFlow writes it.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Largest record [`read_events`] accepts (a corrupt length must not allocate gigabytes).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// One event read back: its time, step and scalars (or the file version of the first record).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The step (frames trained so far, for metarim's logs).
    pub step: i64,
    /// `Some` on the file's first record.
    pub file_version: Option<String>,
    /// `(tag, simple_value)` in the order written.
    pub scalars: Vec<(String, f32)>,
}

/// The run's event file, open for appending one event per update.
#[derive(Debug)]
pub struct EventWriter {
    file: fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// (Re)write the event file of `dir` from `lines` (the run's `train.jsonl`, parsed, in
    /// order) and open it for appending. The file is written to a temporary name and renamed;
    /// afterwards every other event file in `dir` (of an earlier invocation) is removed, so
    /// TensorBoard sees each step once. `now` names the file and dates its first record.
    pub fn rebuild(dir: &Path, lines: &[Value], now: f64) -> Result<EventWriter> {
        let path = dir.join(format!(
            "{EVENT_FILE_PREFIX}{:010}.metarim",
            now.max(0.0) as u64
        ));
        let mut bytes = Vec::new();
        write_record(&mut bytes, &version_event(now));
        for line in lines {
            if let Some(e) = line_event(line) {
                write_record(&mut bytes, &e);
            }
        }
        crate::fsutil::write_atomic(&path, &bytes)?;
        for old in event_files(dir)? {
            if old != path {
                fs::remove_file(&old).with_context(|| {
                    format!(
                        "removing {}, an event file of an earlier invocation",
                        old.display()
                    )
                })?;
            }
        }
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(EventWriter { file, path })
    }

    /// Append the event of one log line (nothing for a line without `frames`).
    pub fn append(&mut self, line: &Value) -> Result<()> {
        let Some(e) = line_event(line) else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        write_record(&mut bytes, &e);
        self.file
            .write_all(&bytes)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The event files in `dir` ([`EVENT_FILE_PREFIX`]`*`, not temporary files), sorted by name.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(EVENT_FILE_PREFIX) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The scalars of one `train.jsonl` line: every number but `frames` under its own name, the
/// elements of every list of numbers as `NAME/i`, those of every object of numbers as
/// `NAME/KEY`; strings, nulls and other values are left out.
/// Keys in the line's order of serialisation as `serde_json` keeps it (sorted).
pub fn scalars(line: &Value) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    let Some(obj) = line.as_object() else {
        return out;
    };
    for (k, v) in obj {
        if k == "frames" || k == "unix_s" {
            continue;
        }
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push((k.clone(), x as f32));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(x) = item.as_f64() {
                        out.push((format!("{k}/{i}"), x as f32));
                    }
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    if let Some(x) = item.as_f64() {
                        out.push((format!("{k}/{key}"), x as f32));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The event of a log line: step `frames`, time `unix_s` (0 when the line has none), its
/// [`scalars`]. `None` without `frames`.
fn line_event(line: &Value) -> Option<Event> {
    let step = i64::try_from(line.get("frames")?.as_u64()?).ok()?;
    Some(Event {
        wall_time: line.get("unix_s").and_then(Value::as_f64).unwrap_or(0.0),
        step,
        file_version: None,
        scalars: scalars(line),
    })
}

fn version_event(now: f64) -> Event {
    Event {
        wall_time: now,
        step: 0,
        file_version: Some(FILE_VERSION.into()),
        scalars: Vec::new(),
    }
}

/// Read every record of an event file. A record cut short at the end of the file (a process
/// killed while writing it) ends the list; a bad checksum or an undecodable record anywhere
/// is an error naming its offset.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 12) else {
            break;
        };
        let len_bytes: [u8; 8] = head[..8].try_into().unwrap_or_default();
        let len_crc = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        if masked_crc32c(&len_bytes) != len_crc {
            bail!("{}: bad length checksum at byte {at}", path.display());
        }
        let len = u64::from_le_bytes(len_bytes);
        if len > MAX_RECORD_BYTES {
            bail!("{}: record of {len} bytes at byte {at}", path.display());
        }
        let len = len as usize;
        let Some(data) = bytes.get(at + 12..at + 12 + len) else {
            break;
        };
        let Some(crc) = bytes.get(at + 12 + len..at + 16 + len) else {
            break;
        };
        if masked_crc32c(data) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
            bail!(
                "{}: bad data checksum in the record at byte {at}",
                path.display()
            );
        }
        let e = decode_event(data)
            .with_context(|| format!("{}: record at byte {at}", path.display()))?;
        events.push(e);
        at += 16 + len;
    }
    Ok(events)
}

fn write_record(out: &mut Vec<u8>, e: &Event) {
    let data = encode_event(e);
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
}

// Protocol buffer wire types.
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn encode_event(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, 1, WIRE_FIXED64);
    out.extend_from_slice(&e.wall_time.to_le_bytes());
    put_key(&mut out, 2, WIRE_VARINT);
    // int64 is encoded as its two's complement u64, as protobuf does.
    put_varint(&mut out, e.step as u64);
    if let Some(v) = &e.file_version {
        put_bytes(&mut out, 3, v.as_bytes());
    }
    if !e.scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, x) in &e.scalars {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            put_key(&mut value, 2, WIRE_FIXED32);
            value.extend_from_slice(&x.to_le_bytes());
            put_bytes(&mut summary, 1, &value);
        }
        put_bytes(&mut out, 5, &summary);
    }
    out
}

/// A protobuf reader over one message's bytes.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// One field's payload.
enum Payload<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(&'a [u8]),
    Fixed32([u8; 4]),
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                bail!("message ends inside a varint");
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            bail!("field runs past the end of its message");
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Payload<'a>)>> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            WIRE_VARINT => Payload::Varint(self.varint()?),
            WIRE_FIXED64 => Payload::Fixed64(self.take(8)?.try_into()?),
            WIRE_LEN => {
                let n = usize::try_from(self.varint()?)?;
                Payload::Len(self.take(n)?)
            }
            WIRE_FIXED32 => Payload::Fixed32(self.take(4)?.try_into()?),
            w => bail!("unsupported wire type {w}"),
        };
        Ok(Some((key >> 3, payload)))
    }
}

fn decode_event(bytes: &[u8]) -> Result<Event> {
    let mut e = Event {
        wall_time: 0.0,
        step: 0,
        file_version: None,
        scalars: Vec::new(),
    };
    let mut f = Fields { bytes, at: 0 };
    while let Some((field, p)) = f.next_field()? {
        match (field, p) {
            (1, Payload::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Payload::Varint(v)) => e.step = v as i64,
            (3, Payload::Len(s)) => e.file_version = Some(String::from_utf8(s.to_vec())?),
            (5, Payload::Len(s)) => decode_summary(s, &mut e.scalars)?,
            _ => {}
        }
    }
    Ok(e)
}

fn decode_summary(bytes: &[u8], out: &mut Vec<(String, f32)>) -> Result<()> {
    let mut f = Fields { bytes, at: 0 };
    while let Some((field, p)) = f.next_field()? {
        let (1, Payload::Len(value)) = (field, p) else {
            continue;
        };
        let mut v = Fields {
            bytes: value,
            at: 0,
        };
        let (mut tag, mut x) = (None, None);
        while let Some((field, p)) = v.next_field()? {
            match (field, p) {
                (1, Payload::Len(s)) => tag = Some(String::from_utf8(s.to_vec())?),
                (2, Payload::Fixed32(b)) => x = Some(f32::from_le_bytes(b)),
                _ => {}
            }
        }
        if let (Some(t), Some(x)) = (tag, x) {
            out.push((t, x));
        }
    }
    Ok(())
}

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant, so that CRCs of data that
/// itself contains CRCs stay well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_round_trips_with_lists_and_objects_split() {
        let dir = tempfile::tempdir().unwrap();
        let line: Value = serde_json::json!({
            "update": 3, "frames": 7680, "level": "BabyAI-GoToLocal-v0",
            "success_rate": 0.25, "module_activity": [0.5, 1.0], "unix_s": 1.5e9,
            "grad_norm_by_role": {"encoder": 2.5, "heads": null}
        });
        let mut w = EventWriter::rebuild(dir.path(), &[], 1.7e9).unwrap();
        w.append(&line).unwrap();
        let ev = read_events(w.path()).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!(ev[1].step, 7680);
        assert_eq!(ev[1].wall_time, 1.5e9);
        let mut got = ev[1].scalars.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("grad_norm_by_role/encoder".to_string(), 2.5),
                ("module_activity/0".to_string(), 0.5),
                ("module_activity/1".to_string(), 1.0),
                ("success_rate".to_string(), 0.25),
                ("update".to_string(), 3.0),
            ]
        );
    }

    #[test]
    fn rebuilding_replaces_earlier_files_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<Value> = (1..=4)
            .map(|u| serde_json::json!({"update": u, "frames": u * 100, "x": u as f64 / 8.0}))
            .collect();
        let first = EventWriter::rebuild(dir.path(), &lines, 1.0e9).unwrap();
        let first_path = first.path().to_path_buf();
        // A torn record at the end (a process killed mid-write) reads as the end of the file.
        let mut bytes = fs::read(&first_path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&first_path, &bytes).unwrap();
        assert_eq!(read_events(&first_path).unwrap().len(), 5);
        // A flipped bit inside a record is an error, not a silent skip.
        bytes.truncate(whole);
        bytes[whole - 6] ^= 1;
        fs::write(&first_path, &bytes).unwrap();
        assert!(format!("{:#}", read_events(&first_path).unwrap_err()).contains("checksum"));
        let second = EventWriter::rebuild(dir.path(), &lines[..2], 2.0e9).unwrap();
        assert_eq!(
            event_files(dir.path()).unwrap(),
            vec![second.path().to_path_buf()]
        );
        let steps: Vec<i64> = read_events(second.path())
            .unwrap()
            .iter()
            .skip(1)
            .map(|e| e.step)
            .collect();
        assert_eq!(steps, vec![100, 200]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.out.tfevents.junk");
        for junk in [&b"x"[..], &[0u8; 12][..], &[0xff; 40][..]] {
            fs::write(&p, junk).unwrap();
            let _ = read_events(&p);
        }
        // A valid frame around undecodable data.
        let mut bytes = Vec::new();
        let data = [0x0b_u8, 0xff];
        let len = (data.len() as u64).to_le_bytes();
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
        fs::write(&p, &bytes).unwrap();
        assert!(read_events(&p).is_err());
    }
}
