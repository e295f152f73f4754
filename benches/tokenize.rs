//! Tokenization cost per article, the CPU work every text pays before batching.
//!
//! `cargo bench --bench tokenize -- [texts.jsonl] [seconds] [threads]`
//! Runs each tokenizer path over real articles for a fixed time on 1 and on `threads` threads
//! (default: all cores) and prints articles/s and microseconds per article per thread, side by
//! side in one run: the service's path (`tokenizers` 1.0, word-prefix shortcut), the same
//! library on whole texts, and the path it replaced (`tokenizers` 0.22 `encode_fast` with the
//! same shortcut), so the ratio between them is measured on the same machine at the same time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use newscls::pipeline::model::ModelSpec;
use newscls::pipeline::tokenize::TextTokenizer;

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
    let spec = ModelSpec::load(Path::new("models/news-topic-e5-small")).expect("model");
    let load = || TextTokenizer::load(&spec.tokenizer_path(), spec.max_length).expect("tokenizer");
    let service = load();
    let whole = load().without_prefix_shortcut();
    let before = Before::load(&spec.tokenizer_path(), service.max_length());
    println!(
        "tokenize: {} articles (mean {} chars), {seconds} s per row",
        texts.len(),
        texts.iter().map(|t| t.chars().count()).sum::<usize>() / texts.len()
    );
    println!("| path | threads | articles/s | µs per article per thread |");
    println!("|---|---:|---:|---:|");
    let paths: [(&str, &Tokenize); 3] = [
        ("service: tokenizers 1.0, word prefix", &|text| {
            service
                .encode(std::slice::from_ref(text), true)
                .expect("tokenize");
        }),
        ("tokenizers 1.0, whole text", &|text| {
            whole
                .encode(std::slice::from_ref(text), true)
                .expect("tokenize");
        }),
        ("before: tokenizers 0.22, word prefix", &|text| {
            before.encode(text)
        }),
    ];
    for (name, tokenize) in paths {
        for n in [1, threads] {
            let done = AtomicUsize::new(0);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for worker in 0..n {
                    let (done, texts) = (&done, &texts);
                    scope.spawn(move || {
                        let mut i = worker;
                        while started.elapsed() < Duration::from_secs_f64(seconds) {
                            tokenize(&texts[i % texts.len()]);
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

/// One way of tokenizing an article, its result dropped.
type Tokenize<'a> = dyn Fn(&String) + Sync + 'a;

/// The service's tokenizer before `tokenizers` 1.0: 0.22's `encode_fast` on a word prefix of
/// 5 then 10 bytes per token, the whole text when neither overflows the window.
struct Before {
    tokenizer: tokenizers_v0::Tokenizer,
    prefix_bytes: [usize; 2],
}

impl Before {
    fn load(path: &Path, max_length: usize) -> Self {
        let mut tokenizer = tokenizers_v0::Tokenizer::from_file(path).expect("tokenizer 0.22");
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers_v0::TruncationParams {
                max_length,
                ..Default::default()
            }))
            .expect("truncation");
        Self {
            tokenizer,
            prefix_bytes: [5 * max_length, 10 * max_length],
        }
    }

    fn encode(&self, text: &str) {
        for limit in self.prefix_bytes {
            if text.len() <= limit {
                break;
            }
            if let Some(cut) = text.as_bytes()[..limit].iter().rposition(|&b| b == b' ') {
                let encoding = self
                    .tokenizer
                    .encode_fast(&text[..cut], true)
                    .expect("0.22");
                if !encoding.get_overflowing().is_empty() {
                    return;
                }
            }
        }
        self.tokenizer.encode_fast(text, true).expect("0.22");
    }
}
