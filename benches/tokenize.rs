//! Tokenization cost per article, the CPU work every text pays before batching.
//!
//! `cargo bench --bench tokenize -- [texts.jsonl] [seconds] [threads]`
//! Runs the service's tokenizer over real articles for a fixed time on 1 and on `threads`
//! threads (default: all cores) and prints articles/s and microseconds per article per thread,
//! next to the reference path (whole text, with offsets) that the property tests compare with.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use newscls::model::ModelSpec;
use newscls::tokenize::TextTokenizer;

#[path = "common/mod.rs"]
mod common;

fn main() {
    let args = common::args();
    let path = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "training/.cache/data/test.jsonl".into()),
    );
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let threads: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let texts = common::texts(&path);
    let spec = ModelSpec::load(std::path::Path::new("models/news-topic-e5-small")).expect("model");
    let load = || TextTokenizer::load(&spec.tokenizer_path(), spec.max_length).expect("tokenizer");
    let service = load();
    let reference = load().without_prefix_shortcut();
    println!(
        "tokenize: {} articles (mean {} chars), {seconds} s per row",
        texts.len(),
        texts.iter().map(|t| t.chars().count()).sum::<usize>() / texts.len()
    );
    println!("| path | threads | articles/s | µs per article per thread |");
    println!("|---|---:|---:|---:|");
    for (name, tokenizer) in [
        ("service", &service),
        ("reference (whole text)", &reference),
    ] {
        for n in [1, threads] {
            let done = AtomicUsize::new(0);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for worker in 0..n {
                    let (done, texts) = (&done, &texts);
                    scope.spawn(move || {
                        let mut i = worker;
                        while started.elapsed() < Duration::from_secs_f64(seconds) {
                            tokenizer
                                .encode(std::slice::from_ref(&texts[i % texts.len()]), true)
                                .expect("tokenize");
                            done.fetch_add(1, Ordering::Relaxed);
                            i += n;
                        }
                    });
                }
            });
            let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            println!(
                "| {name} | {n} | {rate:.0} | {:.1} |",
                1e6 * n as f64 / rate
            );
        }
    }
}
