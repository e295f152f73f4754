//! The shadow challenger with model directories (the registry's part is in the tool tests):
//! sampling, re-tokenization for a challenger with another tokenizer file, a slow challenger
//! that must never hold the champion up, and asking the challenger directly.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    challenger_loaded, repo_path, shadow_settled as settled, write_fast_model_dir, Server, TempDir,
    MODEL_DIR,
};

fn path(dir: &TempDir) -> &str {
    dir.path().to_str().expect("utf-8 path")
}

#[tokio::test]
async fn a_tenth_is_mirrored_at_sample_0_1_and_another_tokenizer_file_is_tokenized_again() {
    let (champion, challenger) = (TempDir::new("shadow-fast"), TempDir::new("shadow-fast2"));
    write_fast_model_dir(champion.path());
    write_fast_model_dir(challenger.path());
    // The same vocabulary written out differently: not byte-identical, so the challenger's
    // texts are tokenized again with its own tokenizer, and must get the same ids.
    let tokenizer: Value = serde_json::from_slice(
        &std::fs::read(challenger.path().join("tokenizer.json")).expect("read"),
    )
    .expect("json");
    std::fs::write(
        challenger.path().join("tokenizer.json"),
        serde_json::to_vec_pretty(&tokenizer).expect("json"),
    )
    .expect("write");
    let server = Server::start(
        &[
            "--model-dir",
            path(&champion),
            "--shadow-uri",
            path(&challenger),
        ],
        &[("NEWSCLS__SHADOW__SAMPLE", "0.1")],
    );
    challenger_loaded(&server).await;
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("Markets close higher for the {i}th session as oil prices ease"))
        .collect();
    for chunk in texts.chunks(25) {
        let response = server.predict(json!({ "inputs": chunk })).await;
        assert_eq!(response.status(), 200);
    }
    let (agree, disagree, dropped, failed) = settled(&server, None).await;
    let mirrored = agree + disagree + dropped + failed;
    eprintln!("sample 0.1: {mirrored} of 1000 mirrored");
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; four deviations either way.
    assert!(
        (62.0..=138.0).contains(&mirrored),
        "{mirrored} mirrored of 1000"
    );
    assert_eq!(
        (disagree, dropped, failed),
        (0.0, 0.0, 0.0),
        "the same graph on ids tokenized again agrees on every text"
    );
    // Both pipelines report beside each other, by role: the champion ran every text, the
    // challenger exactly the mirrored ones.
    assert_eq!(
        server
            .metric("newscls_batch_size_sum{role=\"champion\"}")
            .await,
        1000.0
    );
    assert_eq!(
        server
            .metric("newscls_batch_size_sum{role=\"challenger\"}")
            .await,
        mirrored
    );
    let report = server.get_json("/shadow").await;
    assert_eq!(report["compared"], json!(agree as u64));
    assert_eq!(report["agreement"], json!(1.0));
    assert_eq!(
        report["disagreements"],
        json!([]),
        "no texts kept by default"
    );
}

/// Latency percentiles (p50, p99) of `bodies` sent 8 at a time; every answer must be 200.
async fn timed(server: &Server, bodies: &[Value]) -> (Duration, Duration, Vec<String>) {
    let mut latencies = Vec::new();
    let mut answers = Vec::new();
    for chunk in bodies.chunks(8) {
        let started = Instant::now();
        let handles: Vec<_> = chunk
            .iter()
            .map(|body| {
                let request = server.client.post(server.url("/predict")).json(body);
                tokio::spawn(async move {
                    let response = request.send().await.expect("request");
                    let status = response.status();
                    let body = response.text().await.expect("body");
                    (status, body, started.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (status, body, elapsed) = handle.await.expect("task");
            assert_eq!(status, 200, "{body}");
            latencies.push(elapsed);
            answers.push(body);
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), answers)
}

#[tokio::test]
async fn a_slow_challenger_drops_texts_and_never_holds_the_champion_up() {
    // The champion computes almost nothing; the challenger is the real model on one thread,
    // behind a queue of 4.
    let champion = TempDir::new("shadow-fast-champion");
    write_fast_model_dir(champion.path());
    let bundled = repo_path(MODEL_DIR);
    // One text per batch: the generated graph sums padding too, so its scores would depend on
    // the batch, and the two servers' answers are compared byte for byte.
    let alone = Server::start(
        &["--model-dir", path(&champion), "--max-batch-size", "1"],
        &[],
    );
    let shadowed = Server::start(
        &[
            "--model-dir",
            path(&champion),
            "--max-batch-size",
            "1",
            "--shadow-uri",
            bundled.to_str().expect("utf-8"),
        ],
        &[("NEWSCLS__SHADOW__MAX_QUEUE", "4")],
    );
    challenger_loaded(&shadowed).await;
    let articles: Vec<Value> = crate::support::test_split()
        .iter()
        .cycle()
        .take(200)
        .map(|row| json!({ "inputs": row["text"] }))
        .collect();
    // Side by side: the champion alone, then with the challenger, then alone again.
    let (alone_p50, alone_p99, alone_answers) = timed(&alone, &articles).await;
    let (p50, p99, answers) = timed(&shadowed, &articles).await;
    let (again_p50, again_p99, _) = timed(&alone, &articles).await;
    eprintln!(
        "champion p50/p99 ms: alone {:.1}/{:.1}, with a slow challenger {:.1}/{:.1}, alone again {:.1}/{:.1}",
        alone_p50.as_secs_f64() * 1e3,
        alone_p99.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        again_p50.as_secs_f64() * 1e3,
        again_p99.as_secs_f64() * 1e3
    );
    assert_eq!(
        answers, alone_answers,
        "the champion's answers, byte for byte"
    );
    let (base_p50, base_p99) = (alone_p50.max(again_p50), alone_p99.max(again_p99));
    assert!(
        p50 <= base_p50 * 3 + Duration::from_millis(20),
        "p50 {p50:?} vs {base_p50:?} alone"
    );
    assert!(
        p99 <= base_p99 * 3 + Duration::from_millis(50),
        "p99 {p99:?} vs {base_p99:?} alone"
    );
    let (agree, disagree, dropped, failed) = settled(&shadowed, Some(200.0)).await;
    eprintln!(
        "slow challenger: {agree} agree, {disagree} disagree, {dropped} dropped, {failed} failed"
    );
    assert_eq!(
        agree + disagree + dropped + failed,
        200.0,
        "every text counted once"
    );
    assert!(
        dropped > 0.0,
        "a queue of 4 behind a slow model drops texts"
    );
    assert!(agree + disagree > 0.0, "and computes some");
    assert_eq!(failed, 0.0);
    // The challenger's worker runs at the lowest priority (Linux: niceness 19).
    let tasks = std::fs::read_dir(format!("/proc/{}/task", shadowed.pid())).expect("tasks");
    let nice: Vec<(String, i64)> = tasks
        .flatten()
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the parenthesised name: state is the 3rd field, nice the 19th.
            let after = stat.rsplit_once(')')?.1;
            let nice = after.split_whitespace().nth(16)?.parse().ok()?;
            name.trim()
                .starts_with("inference")
                .then(|| (name.trim().to_string(), nice))
        })
        .collect();
    assert!(
        nice.contains(&("inference-bg-0".to_string(), 19)),
        "{nice:?}"
    );
    assert!(nice.contains(&("inference-0".to_string(), 0)), "{nice:?}");
}

#[tokio::test]
async fn the_challenger_answers_when_asked_and_is_absent_without_a_shadow() {
    let challenger = TempDir::new("shadow-asked");
    crate::support::write_perturbed_model_dir(challenger.path(), 4, -8.0, Some("7-challenger"));
    let server = Server::start(&["--shadow-uri", path(&challenger)], &[]);
    let shadow = challenger_loaded(&server).await;
    assert_eq!(shadow["challenger"]["version"], "7-challenger");
    // Spinning champion threads on the CPU (the default) would starve the challenger: said.
    assert!(
        server
            .log_shows("set model.intra_op_spinning: false", Duration::from_secs(5))
            .await,
        "{}",
        server.log()
    );
    assert_eq!(shadow["sample"], 1.0);
    let text = "The striker scored twice as the home side won the cup final.";
    let champion = server.predict(json!({ "inputs": text })).await;
    let champion_version = champion.headers()["x-model-version"].clone();
    let champion: Value = champion.json().await.expect("json");
    assert_eq!(champion[0]["label"], "sport");
    let asked = server
        .predict_from("challenger", json!({ "inputs": text }))
        .await;
    assert_eq!(asked.status(), 200);
    assert_eq!(asked.headers()["x-model-version"], "7-challenger");
    assert_ne!(champion_version, "7-challenger");
    let asked: Value = asked.json().await.expect("json");
    assert_ne!(asked[0]["label"], "sport", "the perturbed head answers");
    // Asking the challenger is not mirrored: one text was, the champion's.
    let (agree, disagree, dropped, failed) = settled(&server, Some(1.0)).await;
    assert_eq!((agree, disagree, dropped, failed), (0.0, 1.0, 0.0, 0.0));
    let bad = server.predict_from("3", json!({ "inputs": text })).await;
    assert_eq!(bad.status(), 422);
    drop(server);

    let plain = Server::start(&[], &[]);
    assert!(plain.get_json("/info").await["shadow"].is_null());
    not_found_naming_the_setting(plain.get("/shadow").await).await;
    not_found_naming_the_setting(
        plain
            .predict_from("challenger", json!({ "inputs": text }))
            .await,
    )
    .await;
}

/// A 404 whose error says which setting turns the shadow on.
async fn not_found_naming_the_setting(response: reqwest::Response) {
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("shadow.uri"),
        "{body}"
    );
}
