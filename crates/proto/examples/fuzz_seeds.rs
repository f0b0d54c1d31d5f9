//! Writes the wire vectors as raw files: the seed corpus of the fuzz targets.
//!
//! ```text
//! cargo run -p gotalk-proto --example fuzz_seeds -- fuzz/corpus/seed
//! ```
//!
//! One file per vector of `tests/vectors/{messages,invalid}.jsonl`, named
//! after the vector, plus `all-messages`: every well-formed vector back to
//! back, so the fuzzers start from a multi-message stream too.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

const MESSAGES: &str = include_str!("../tests/vectors/messages.jsonl");
const INVALID: &str = include_str!("../tests/vectors/invalid.jsonl");

/// `(name, raw bytes)` of every vector in a jsonl file.
fn vectors(jsonl: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
            let name = v["name"].as_str().ok_or("vector without name")?;
            let hex = v["wire_hex"].as_str().ok_or("vector without wire_hex")?;
            if hex.len() % 2 != 0 {
                return Err(format!("{name}: odd wire_hex"));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| format!("{name}: {e}"))?;
            Ok((name.to_owned(), bytes))
        })
        .collect()
}

fn main() -> ExitCode {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/seed".to_owned()),
    );
    let (messages, invalid) = match (vectors(MESSAGES), vectors(INVALID)) {
        (Ok(m), Ok(i)) => (m, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bad vector file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let all: Vec<u8> = messages.iter().flat_map(|(_, b)| b.clone()).collect();
    let seeds = messages
        .iter()
        .chain(&invalid)
        .cloned()
        .chain([("all-messages".to_owned(), all)]);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut written = 0;
    for (name, bytes) in seeds {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        written += 1;
    }
    println!("wrote {written} seeds to {}", dir.display());
    ExitCode::SUCCESS
}
