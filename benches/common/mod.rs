//! What the benchmark programs share: their arguments and the texts they run on.

use std::path::Path;

/// The program's arguments, without the `--bench` that `cargo bench` adds.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// The `text` field of every line of a JSONL file (a test split, or bench/run.sh's texts).
pub fn texts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (training/test_split.sh writes the test split)",
                path.display()
            )
        })
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("jsonl")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect()
}
