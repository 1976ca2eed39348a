//! Mission parser (`metarim_core::mission::instr::Instr::parse`) and tokeniser
//! (`metarim_core::mission::vocab::tokenize`).
//!
//! Checks, for any text: parsing and tokenising never panic; a parsed instruction renders
//! (`write_surface`, with the input's own articles) to text that parses to the same
//! instruction, renders to itself and equals the input with its whitespace normalised;
//! tokenising fills exactly the reported count of ids (every id known or `UNK`, the rest
//! `PAD`) and fails only when the tokens do not fit; an accepted mission has at most 4 actions
//! and as many navigations as its actions need.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metarim_core::mission::instr::{write_surface, Instr};
use metarim_core::mission::vocab::{tokenize, MAX_TOKENS, PAD, UNK, VOCAB_SIZE};

/// Render `instr`, the i-th description taking "the" when `articles[i]` says so.
fn render(instr: &Instr, articles: &[bool]) -> String {
    let mut s = String::new();
    write_surface(
        instr,
        |i| {
            if articles.get(i).copied().unwrap_or(true) {
                1
            } else {
                2
            }
        },
        &mut s,
    )
    .expect("writing to a String");
    s
}

/// The parser's words (a trailing comma is its own word) joined by single spaces, commas
/// attached to the word before: how `write_surface` spaces an accepted mission.
fn normalised(text: &str) -> String {
    let mut out = String::new();
    for raw in text.split_ascii_whitespace() {
        let (word, comma) = match raw.strip_suffix(',') {
            Some(w) => (w, true),
            None => (raw, false),
        };
        if !word.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
        if comma {
            out.push(',');
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut ids = [u16::MAX; MAX_TOKENS];
    match tokenize(text, &mut ids) {
        Ok(n) => {
            assert!(n <= MAX_TOKENS);
            assert!(ids[..n]
                .iter()
                .all(|&id| id == UNK || (2..VOCAB_SIZE as u16).contains(&id)));
            assert!(ids[n..].iter().all(|&id| id == PAD));
        }
        Err(_) => {
            let mut big = vec![0u16; text.len() + 1];
            let n = tokenize(text, &mut big).expect("enough room for every token");
            assert!(n > MAX_TOKENS, "tokenize failed with {n} tokens");
        }
    }
    let Ok(instr) = Instr::parse(text) else {
        return;
    };
    let (actions, n) = instr.actions();
    assert!((1..=4).contains(&n) && actions[..n].iter().all(Option::is_some));
    let navs: u32 = actions[..n].iter().flatten().map(|a| a.num_navs()).sum();
    assert_eq!(instr.num_navs(), navs);
    let articles: Vec<bool> = text
        .split_ascii_whitespace()
        .filter(|w| *w == "the" || *w == "a")
        .map(|w| w == "the")
        .collect();
    let s = render(&instr, &articles);
    assert_eq!(Instr::parse(&s), Ok(instr), "{s:?} does not parse back");
    assert_eq!(render(&instr, &articles), s);
    assert_eq!(s, normalised(text), "rendering differs from the input");
});
