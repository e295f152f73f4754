//! `newscls classify` and `newscls eval` on real files: the three formats against the server's
//! own answers, bad rows, interrupted runs resumed, bounded memory, the model card's figures,
//! two versions compared, and the progress a person sees.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{json, Value};

use crate::support::{
    command, peak_rss_kb, repo_path, send_signal, test_split, write_fast_model_dir, Server,
    TempDir, MODEL_DIR,
};

/// `newscls classify ARGS` to completion.
fn classify(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(&[&["classify"], args].concat(), env)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn newscls")
        .wait_with_output()
        .expect("wait for newscls")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:.200}")))
        .collect()
}

fn path(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The server's top label for every text, asked 32 at a time.
async fn server_labels(texts: &[String]) -> Vec<String> {
    let server = Server::start(&["--device", "cpu"], &[]);
    let mut labels = Vec::new();
    for chunk in texts.chunks(32) {
        let answer: Value = server
            .predict(json!({"inputs": chunk, "top_k": 1}))
            .await
            .json()
            .await
            .expect("json");
        labels.extend(
            answer
                .as_array()
                .expect("one list per text")
                .iter()
                .map(|ranked| ranked[0]["label"].as_str().expect("label").to_string()),
        );
    }
    labels
}

fn write_parquet(path: &Path, rows: &[Value]) {
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect();
    let column = |key: &str| -> StringArray {
        rows.iter()
            .map(|r| Some(r[key].as_str().expect("string").to_string()))
            .collect()
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(column("source")),
            Arc::new(column("text")),
        ],
    )
    .expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// `(id, source, label)` of every row of a Parquet file, with the type of its `id` column.
fn read_parquet(path: &Path) -> (DataType, Vec<(String, String, String)>) {
    let file = std::fs::File::open(path).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    let mut id_type = DataType::Null;
    for batch in reader {
        let batch = batch.expect("batch");
        id_type = batch.column_by_name("id").expect("id").data_type().clone();
        let ids = batch
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .expect("int64 ids kept as they were");
        let string = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .unwrap_or_else(|| panic!("a string column {name}"))
        };
        let (sources, labels) = (string("source"), string("label"));
        for i in 0..batch.num_rows() {
            rows.push((
                ids.value(i).to_string(),
                sources.value(i).to_string(),
                labels.value(i).to_string(),
            ));
        }
    }
    (id_type, rows)
}

#[tokio::test]
async fn jsonl_csv_and_parquet_come_back_in_order_with_the_servers_labels_and_every_field() {
    let rows = test_split();
    let texts: Vec<String> = rows
        .iter()
        .map(|r| r["text"].as_str().expect("text").to_string())
        .collect();
    let expected = server_labels(&texts).await;
    let dir = TempDir::new("files-formats");

    // JSONL: the gold label is replaced by the prediction; id and source pass through.
    let input = path(&dir, "in.jsonl");
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let output = path(&dir, "out.jsonl");
    let run = classify(&[text(&input), "-o", text(&output), "--all-scores"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = read_jsonl(&output);
    assert_eq!(got.len(), rows.len());
    for ((row, out), label) in rows.iter().zip(&got).zip(&expected) {
        assert_eq!(out["id"], row["id"]);
        assert_eq!(out["source"], row["source"]);
        assert_eq!(out["text"], row["text"]);
        assert_eq!(out["label"], json!(label));
        let scores = out["scores"].as_object().expect("all scores");
        assert_eq!(scores.len(), 6);
        let best = scores[label.as_str()].as_f64().expect("score");
        assert!((out["score"].as_f64().expect("score") - best).abs() < 1e-6);
    }
    assert!(
        stderr(&run).contains("newscls classify: 215 rows, 0 errors"),
        "{}",
        stderr(&run)
    );

    // CSV, with texts holding newlines and quotes; no id column: rows are numbered.
    let input = path(&dir, "in.csv");
    let mut csv = ::csv::Writer::from_path(&input).expect("csv");
    csv.write_record(["source", "text"]).expect("header");
    for row in &rows {
        csv.write_record([
            row["source"].as_str().expect("s"),
            row["text"].as_str().expect("t"),
        ])
        .expect("record");
    }
    csv.flush().expect("flush");
    drop(csv);
    let output = path(&dir, "out.csv");
    let run = classify(&[text(&input), "-o", text(&output), "--with-model"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut reader = ::csv::Reader::from_path(&output).expect("csv out");
    let headers: Vec<String> = reader
        .headers()
        .expect("headers")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(
        headers,
        [
            "id",
            "source",
            "text",
            "label",
            "score",
            "model_name",
            "model_version",
            "error"
        ]
    );
    let records: Vec<::csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), rows.len());
    for (i, ((record, row), label)) in records.iter().zip(&rows).zip(&expected).enumerate() {
        assert_eq!(&record[0], i.to_string().as_str());
        assert_eq!(&record[1], row["source"].as_str().expect("source"));
        assert_eq!(&record[2], row["text"].as_str().expect("text"));
        assert_eq!(&record[3], label.as_str());
        assert_eq!(&record[5], "news-topic-e5-small");
        assert_eq!(&record[7], "");
    }

    // Parquet: an int64 id column stays int64.
    let input = path(&dir, "in.parquet");
    write_parquet(&input, &rows);
    let output = path(&dir, "out.parquet");
    let run = classify(&[text(&input), "-o", text(&output)], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (id_type, got) = read_parquet(&output);
    assert_eq!(id_type, DataType::Int64);
    let want: Vec<(String, String, String)> = rows
        .iter()
        .zip(&expected)
        .map(|(r, l)| {
            (
                r["id"].as_str().expect("id").to_string(),
                r["source"].as_str().expect("source").to_string(),
                l.clone(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_bad_row_gets_an_error_and_the_others_are_classified() {
    let dir = TempDir::new("files-bad-rows");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let input = path(&dir, "in.jsonl");
    let mut file = std::fs::File::create(&input).expect("create");
    file.write_all(b"{\"id\":\"ok1\",\"text\":\"Markets rallied after the decision.\"}\n")
        .expect("write");
    file.write_all(b"{\"id\":\"missing\",\"title\":\"no text field\"}\n")
        .expect("write");
    file.write_all(b"{\"id\":\"empty\",\"text\":\"   \"}\n")
        .expect("write");
    file.write_all(b"{\"id\":\"bad-utf8\",\"text\":\"caf\xe9\"}\n")
        .expect("write");
    file.write_all(format!("{{\"id\":\"long\",\"text\":\"{}\"}}\n", "word ".repeat(40)).as_bytes())
        .expect("write");
    file.write_all(b"[1, 2, 3]\n").expect("write");
    file.write_all(b"{\"id\":\"number\",\"text\":42}\n")
        .expect("write");
    file.write_all("{\"id\":\"ok2\",\"text\":\"코스피 상승\"}\n".as_bytes())
        .expect("write");
    drop(file);
    let output = path(&dir, "out.jsonl");
    let limit = [("NEWSCLS__LIMITS__MAX_INPUT_CHARS", "100")];
    let args = [
        "--model-dir",
        text(&model),
        text(&input),
        "-o",
        text(&output),
    ];
    let run = classify(&args, &limit);
    assert!(
        run.status.success(),
        "errors are rows, not a failure: {}",
        stderr(&run)
    );
    let rows = read_jsonl(&output);
    let by_id: HashMap<String, &Value> = rows
        .iter()
        .map(|r| (r["id"].to_string().trim_matches('"').to_string(), r))
        .collect();
    assert_eq!(rows.len(), 8, "every row, in order: {rows:?}");
    for ok in ["ok1", "ok2"] {
        assert!(
            by_id[ok]["label"].is_string() && by_id[ok]["error"].is_null(),
            "{ok}"
        );
    }
    let error = |id: &str| by_id[id]["error"].as_str().unwrap_or_default().to_string();
    assert!(error("missing").contains("no `text` field"));
    assert!(error("empty").contains("empty"));
    // Not JSON any more (JSON is UTF-8): the row is known by its position.
    assert!(error("3").contains("UTF-8"));
    assert!(error("long").contains("limit is 100"));
    assert!(
        error("5").contains("not a JSON object"),
        "numbered by position: {rows:?}"
    );
    assert!(error("number").contains("not a string"));
    assert!(
        stderr(&run).contains("8 rows, 6 errors"),
        "{}",
        stderr(&run)
    );

    let strict = classify(&[&args[..], &["--fail-on-error"]].concat(), &limit);
    assert_eq!(strict.status.code(), Some(2), "{}", stderr(&strict));
}

/// `rows` numbered articles in JSONL (openings of the test split, repeated), for fast runs.
fn numbered_articles(path: &Path, rows: usize, chars: usize) {
    let texts: Vec<String> = test_split()
        .iter()
        .map(|r| {
            r["text"]
                .as_str()
                .expect("text")
                .chars()
                .take(chars)
                .collect()
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..rows {
        let row = json!({"id": format!("a{i}"), "text": texts[i % texts.len()]});
        writeln!(out, "{row}").expect("write");
    }
    out.flush().expect("flush");
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// `newscls classify ARGS` started, its standard error piped.
fn spawn_classify(args: &[&str]) -> Child {
    command(&[&["classify"], args].concat(), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn newscls classify")
}

/// Starts `newscls classify` and kills it with `signal` once it has written at least `rows`.
fn interrupt_after(args: &[&str], output: &Path, rows: usize, signal: &str) -> Output {
    let mut child = spawn_classify(args);
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines_in(output) < rows {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished before the signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(child.id(), signal);
    child.wait_with_output().expect("wait")
}

fn resume_after(signal: &str) {
    let dir = TempDir::new("files-resume");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let (input, output) = (path(&dir, "in.jsonl"), path(&dir, "out.jsonl"));
    let rows = 40_000;
    numbered_articles(&input, rows, 400);
    let args = [
        "--model-dir",
        text(&model),
        text(&input),
        "-o",
        text(&output),
    ];
    let stopped = interrupt_after(&args, &output, 2_000, signal);
    let written = lines_in(&output);
    assert!(written < rows, "stopped mid-file: {written} of {rows}");
    if signal == "TERM" {
        assert_eq!(
            stopped.status.code(),
            Some(128 + 15),
            "{}",
            stderr(&stopped)
        );
        assert!(
            stderr(&stopped).contains("interrupted"),
            "{}",
            stderr(&stopped)
        );
        // What a SIGTERM leaves is whole rows only.
        let text = std::fs::read_to_string(&output).expect("output");
        assert!(text.ends_with('\n'));
        assert_eq!(read_jsonl(&output).len(), written);
    }
    let resumed = classify(&[&args[..], &["--resume"]].concat(), &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let ids: Vec<String> = read_jsonl(&output)
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), rows, "every id exactly once");
    assert_eq!(unique.len(), rows);
    let in_order: Vec<String> = (0..rows).map(|i| format!("a{i}")).collect();
    assert_eq!(ids, in_order, "in input order");
}

#[test]
fn a_run_killed_mid_file_is_resumed_with_every_id_exactly_once() {
    resume_after("KILL");
}

#[test]
fn a_terminated_run_leaves_whole_rows_and_resumes() {
    resume_after("TERM");
}

/// `newscls classify ARGS` to completion, with its peak resident memory (MB) sampled every 20 ms.
fn classify_watching_rss(args: &[&str]) -> (Output, u64) {
    let mut child = spawn_classify(args);
    let mut peak_kb = 0;
    while child.try_wait().expect("wait").is_none() {
        peak_kb = peak_kb.max(peak_rss_kb(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("output"), peak_kb / 1024)
}

/// `newscls classify --model-dir MODEL INPUT -o OUTPUT`, watched as [`classify_watching_rss`];
/// prints `WHAT: peak RSS …, exit …` for the note.
fn classify_one_file(model: &Path, input: &Path, output: &Path, what: &str) -> (Output, u64) {
    let (result, peak_mb) =
        classify_watching_rss(&["--model-dir", text(model), text(input), "-o", text(output)]);
    eprintln!(
        "{what}: peak RSS {} MB, exit {:?}",
        peak_mb,
        result.status.code()
    );
    (result, peak_mb)
}

/// Peak RSS (MB) of `newscls classify` over `rows` rows of `chars` characters, fast model.
fn classify_peak_rss_mb(dir: &TempDir, model: &Path, rows: usize, chars: usize) -> (u64, u64) {
    let (input, output) = (path(dir, "in.jsonl"), path(dir, "out.jsonl"));
    numbered_articles(&input, rows, chars);
    let size_mb = std::fs::metadata(&input).expect("input").len() / 1_000_000;
    let (status, peak_mb) = classify_watching_rss(&[
        "--model-dir",
        text(model),
        text(&input),
        "-o",
        text(&output),
    ]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(lines_in(&output), rows);
    (peak_mb, size_mb)
}

#[test]
fn memory_stays_bounded_whatever_the_file_size() {
    let dir = TempDir::new("files-memory");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let (small_mb, _) = classify_peak_rss_mb(&dir, &model, 2_000, 600);
    let (large_mb, size_mb) = classify_peak_rss_mb(&dir, &model, 200_000, 600);
    eprintln!(
        "peak RSS: {small_mb} MB for 2,000 rows, {large_mb} MB for 200,000 rows ({size_mb} MB)"
    );
    assert!(size_mb >= 100, "the input is {size_mb} MB");
    // A whole-file load would add the input (>= 100 MB) at least once.
    assert!(
        small_mb > 0 && large_mb < small_mb + 40,
        "peak RSS {small_mb} -> {large_mb} MB"
    );
}

/// The accuracy of a CPU deployment as the model card's re-scoring table prints it (the row of
/// the quantized variant with its close calls re-scored, last column).
fn model_card_rescored_accuracy() -> String {
    let card =
        std::fs::read_to_string(repo_path(&format!("{MODEL_DIR}/MODEL_CARD.md"))).expect("card");
    let row = card
        .lines()
        .find(|l| l.contains("close calls re-scored on"))
        .expect("the re-scored path's row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    cells[cells.len() - 2].to_string()
}

/// The shipped model's row of the model card: accuracy and macro-F1 as printed there.
fn model_card_figures() -> (String, String) {
    let card =
        std::fs::read_to_string(repo_path(&format!("{MODEL_DIR}/MODEL_CARD.md"))).expect("card");
    let row = card
        .lines()
        .find(|l| l.contains("shipped as model_quantized.onnx"))
        .expect("the shipped variant's row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    (cells[2].to_string(), cells[3].to_string())
}

#[test]
fn eval_reproduces_the_model_cards_figures_and_compares_two_versions() {
    let dir = TempDir::new("files-eval");
    let split = repo_path("training/.cache/data/test.jsonl");
    test_split();
    // A CPU deployment: the quantized variant, its close calls re-scored.
    let deployed = run(&["eval", text(&split), "--json"], &[]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let deployed: Value = serde_json::from_slice(&deployed.stdout).expect("json report");
    assert_eq!(
        format!("{:.3}", deployed["accuracy"].as_f64().expect("accuracy")),
        model_card_rescored_accuracy()
    );
    // The quantized variant alone, as the card's table of shipped variants measures it.
    let run_eval = run(&["eval", text(&split), "--json", "--rescore", "off"], &[]);
    assert!(run_eval.status.success(), "{}", stderr(&run_eval));
    let report: Value = serde_json::from_slice(&run_eval.stdout).expect("json report");
    let (accuracy, macro_f1) = model_card_figures();
    assert_eq!(
        format!("{:.3}", report["accuracy"].as_f64().expect("accuracy")),
        accuracy
    );
    assert_eq!(
        format!("{:.3}", report["macro_f1"].as_f64().expect("macro-F1")),
        macro_f1
    );
    assert_eq!(report["rows"], 215);
    let confusion_total: u64 = report["confusion"]
        .as_array()
        .expect("matrix")
        .iter()
        .flat_map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|n| n.as_u64().expect("n"))
        })
        .sum();
    assert_eq!(confusion_total, 215);

    // The GPU variant (fp16, run on the CPU here) as the second version: the differences
    // listed must be exactly the rows whose labels differ between the two classify runs.
    let gpu_variant = path(&dir, "gpu-variant");
    std::fs::create_dir_all(&gpu_variant).expect("dir");
    for file in ["model_fp16.onnx", "tokenizer.json", "config.json"] {
        std::fs::copy(
            repo_path(&format!("{MODEL_DIR}/{file}")),
            gpu_variant.join(file),
        )
        .expect("copy");
    }
    let compared = run(
        &[
            "eval",
            text(&split),
            "--json",
            "--show",
            "1000",
            "--compare-uri",
            text(&gpu_variant),
            "--rescore",
            "off",
        ],
        &[],
    );
    assert!(compared.status.success(), "{}", stderr(&compared));
    let comparison: Value = serde_json::from_slice(&compared.stdout).expect("json");
    assert_eq!(
        comparison["first"], report,
        "the first model's figures are the same"
    );
    let labels_of = |model_dir: &Path| -> Vec<String> {
        let output = path(&dir, "labels.jsonl");
        let run = classify(
            &[
                "--model-dir",
                text(model_dir),
                text(&split),
                "-o",
                text(&output),
                "--rescore",
                "off",
            ],
            &[],
        );
        assert!(run.status.success(), "{}", stderr(&run));
        read_jsonl(&output)
            .iter()
            .map(|r| r["label"].as_str().expect("label").to_string())
            .collect()
    };
    let (first, second) = (labels_of(&repo_path(MODEL_DIR)), labels_of(&gpu_variant));
    let differing: Vec<usize> = (0..first.len())
        .filter(|&i| first[i] != second[i])
        .collect();
    assert_eq!(comparison["differing"], json!(differing.len()));
    assert!(
        !differing.is_empty(),
        "the quantized variant alone differs on a few"
    );
    let listed = comparison["differences"].as_array().expect("differences");
    assert_eq!(listed.len(), differing.len());
    for (entry, &i) in listed.iter().zip(&differing) {
        assert_eq!(entry["first"], json!(first[i]));
        assert_eq!(entry["second"], json!(second[i]));
    }
}

#[test]
fn progress_is_a_bar_on_a_terminal_and_log_lines_otherwise() {
    let dir = TempDir::new("files-progress");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let (input, output) = (path(&dir, "in.jsonl"), path(&dir, "out.jsonl"));
    numbered_articles(&input, 20_000, 400);
    let args = [
        "classify",
        "--model-dir",
        text(&model),
        text(&input),
        "-o",
        text(&output),
    ];

    let plain = run(&args, &[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let log = stderr(&plain);
    assert!(
        log.lines()
            .any(|l| l.starts_with("newscls classify: ") && l.contains("% of the input")),
        "a periodic line: {log}"
    );
    assert!(
        !log.contains('\r') && !log.contains("\u{1b}["),
        "no terminal codes in a log: {log:?}"
    );

    // `script` runs the command on a pseudo-terminal and copies what it draws.
    let binary = env!("CARGO_BIN_EXE_newscls");
    let line = format!("{binary} {} --log-level warn", args.join(" "));
    let drawn = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stdout)
    );
    let screen = String::from_utf8_lossy(&drawn.stdout);
    assert!(
        screen.contains("rows/s") && screen.contains('%') && screen.contains("ETA"),
        "{screen:?}"
    );
    assert!(
        screen.contains('\r') || screen.contains("\u{1b}["),
        "redrawn in place: {screen:?}"
    );
}

#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = TempDir::new("files-same");
    let input = path(&dir, "in.jsonl");
    numbered_articles(&input, 20, 200);
    let before = std::fs::read(&input).expect("input");
    let link = path(&dir, "link.jsonl");
    std::os::unix::fs::symlink(&input, &link).expect("symlink");
    let hard = path(&dir, "hard.jsonl");
    std::fs::hard_link(&input, &hard).expect("hard link");
    let dotted = format!("{}/./in.jsonl", dir.path().display());
    for output in [text(&input), text(&link), text(&hard), dotted.as_str()] {
        let result = classify(&[text(&input), "-o", output], &[]);
        assert!(!result.status.success(), "-o {output} exited 0");
        assert!(
            stderr(&result).contains("is the input file"),
            "-o {output}: {}",
            stderr(&result)
        );
        assert_eq!(
            std::fs::read(&input).expect("input"),
            before,
            "-o {output} changed the input"
        );
    }
}

#[test]
fn a_parquet_file_that_breaks_mid_way_fails_the_run_and_keeps_whole_rows() {
    let dir = TempDir::new("files-broken-parquet");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    // Four row groups of 512 rows; the last one's data pages overwritten with garbage.
    let rows: Vec<Value> = (0..2048)
        .map(|i| {
            json!({"id": i.to_string(), "source": "wire",
                   "text": format!("Article {i}: shares rose as the market opened higher.")})
        })
        .collect();
    let input = path(&dir, "in.parquet");
    write_parquet_in_groups(&input, &rows, 512);
    let mut bytes = std::fs::read(&input).expect("input");
    let file = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(&input).expect("open"),
    )
    .expect("parquet");
    use parquet::file::reader::FileReader;
    let last = file.metadata().row_group(3);
    let (start, length) = last.column(2).byte_range();
    for byte in &mut bytes[start as usize + 8..(start + length) as usize - 8] {
        *byte = 0x5a;
    }
    std::fs::write(&input, &bytes).expect("corrupt");
    let output = path(&dir, "out.parquet");
    let result = classify(
        &[
            "--model-dir",
            text(&model),
            text(&input),
            "-o",
            text(&output),
        ],
        &[],
    );
    assert!(
        !result.status.success(),
        "a broken file exited 0: {}",
        stderr(&result)
    );
    assert!(
        stderr(&result).contains("input"),
        "the error says what failed: {}",
        stderr(&result)
    );
    eprintln!("a Parquet file broken mid-way: {}", stderr(&result).trim());
    // What was written before the failure is a valid file of whole rows.
    let (_, written) = read_parquet(&output);
    assert!(written.len() < 2048, "{} rows written", written.len());
    assert_eq!(written.len() % 256, 0, "whole chunks: {}", written.len());
}

fn write_parquet_in_groups(path: &Path, rows: &[Value], group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let file = std::fs::File::create(path).expect("create");
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(properties))
        .expect("writer");
    for chunk in rows.chunks(group) {
        let ids: Vec<i64> = chunk
            .iter()
            .map(|r| r["id"].as_str().expect("id").parse().expect("numeric id"))
            .collect();
        let column = |key: &str| -> StringArray {
            chunk
                .iter()
                .map(|r| Some(r[key].as_str().expect("string").to_string()))
                .collect()
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(column("source")),
                Arc::new(column("text")),
            ],
        )
        .expect("batch");
        writer.write(&batch).expect("write");
        writer.flush().expect("row group");
    }
    writer.close().expect("close");
}

/// `before`, 200 MiB of `a`, then `after`: one row far past any byte cap between two small ones.
fn write_around_200_mib(path: &Path, before: &str, after: &str) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    out.write_all(before.as_bytes()).expect("write");
    let block = "a".repeat(1 << 20);
    for _ in 0..200 {
        out.write_all(block.as_bytes()).expect("write");
    }
    out.write_all(after.as_bytes()).expect("write");
    out.flush().expect("flush");
}

#[test]
fn a_200_mib_line_gets_a_row_error_without_being_held() {
    let dir = TempDir::new("files-long-line");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let input = path(&dir, "in.jsonl");
    write_around_200_mib(
        &input,
        &format!(
            "{}\n{{\"id\": \"huge\", \"text\": \"",
            json!({"id": "before", "text": "Shares rose."})
        ),
        &format!("\"}}\n{}\n", json!({"id": "after", "text": "Rates fell."})),
    );
    let output = path(&dir, "out.jsonl");
    let (_, peak_mb) = classify_one_file(&model, &input, &output, "a 200 MiB line");
    let rows = read_jsonl(&output);
    let ids: Vec<Value> = rows.iter().map(|r| r["id"].clone()).collect();
    // The oversized row keeps its place, under its row number (its id was not read).
    assert_eq!(ids, [json!("before"), json!(1), json!("after")], "{rows:?}");
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_row_bytes")),
        "{}",
        rows[1]
    );
    assert!(rows[0]["label"].is_string() && rows[2]["label"].is_string());
    assert!(peak_mb < 300, "peak RSS {} MB", peak_mb);
}

#[test]
fn eval_of_standard_input_against_another_model_is_refused() {
    let result = run(
        &["eval", "-", "--compare-uri", text(&repo_path(MODEL_DIR))],
        &[],
    );
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("standard input can be read only once"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn a_csv_record_past_the_byte_cap_gets_a_row_error_without_being_held() {
    let dir = TempDir::new("files-long-csv");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let input = path(&dir, "in.csv");
    // The huge field goes on past the cap with an escaped quote, a comma and a line break inside
    // its quotes: the next record starts only after them.
    write_around_200_mib(
        &input,
        "id,text\nbefore,Shares rose.\nhuge,\"",
        " with \"\"quotes\"\", commas,\nand lines\"\nafter,Rates fell.\n",
    );
    let output = path(&dir, "out.csv");
    let (result, peak_mb) = classify_one_file(&model, &input, &output, "a 200 MiB CSV field");
    assert!(result.status.success(), "{}", stderr(&result));
    let mut rows = csv::Reader::from_path(&output).expect("the output");
    let headers = rows.headers().expect("headers").clone();
    let column = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (id, label, error) = (column("id"), column("label"), column("error"));
    let rows: Vec<csv::StringRecord> = rows.records().map(|r| r.expect("a row")).collect();
    let ids: Vec<&str> = rows.iter().map(|r| &r[id]).collect();
    // The oversized row keeps its place, under its row number (its cells were not read).
    assert_eq!(ids, ["before", "1", "after"]);
    assert!(rows[1][error].contains("max_row_bytes"), "{:?}", rows[1]);
    assert!(!rows[0][label].is_empty() && !rows[2][label].is_empty());
    assert!(peak_mb < 300, "peak RSS {} MB", peak_mb);
}

#[test]
fn a_200_mib_parquet_value_gets_a_row_error_unread_and_the_run_goes_on() {
    let dir = TempDir::new("files-long-parquet");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    // One row per row group, as a writer's default settings store them: the huge value lands in a
    // dictionary page or a data page of its own, whichever the writer picks.
    let rows = vec![
        json!({"id": "0", "source": "wire", "text": "Shares rose as the market opened."}),
        json!({"id": "1", "source": "wire", "text": "a".repeat(200 << 20)}),
        json!({"id": "2", "source": "wire", "text": "Rates fell after the meeting."}),
    ];
    let input = path(&dir, "in.parquet");
    write_parquet_in_groups(&input, &rows, 1);
    drop(rows);
    let output = path(&dir, "out.parquet");
    let (result, peak_mb) = classify_one_file(&model, &input, &output, "a 200 MiB Parquet value");
    assert!(result.status.success(), "{}", stderr(&result));
    let (_, written) = read_parquet(&output);
    let ids: Vec<&str> = written.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["0", "1", "2"],
        "every row in its place, with its own id"
    );
    assert!(
        !written[0].2.is_empty() && !written[2].2.is_empty(),
        "{written:?}"
    );
    assert_eq!(written[1].2, "", "the oversized row has no label");
    let file = std::fs::File::open(&output).expect("output");
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("rows");
    let errors = batch
        .column_by_name("error")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        .expect("an error column");
    assert!(
        errors.value(1).contains("Parquet page") && errors.value(1).contains("max_row_bytes"),
        "{}",
        errors.value(1)
    );
    assert!(peak_mb < 300, "peak RSS {} MB", peak_mb);
}

/// A reader that hands out `chunks` chunks of its inner reader, then panics as a buggy decoder
/// would on a malformed file.
struct PanicsAfter {
    inner: newscls::files::format::JsonlReader<std::io::Cursor<Vec<u8>>>,
    chunks: usize,
}

impl newscls::files::format::ChunkReader for PanicsAfter {
    fn next_chunk(
        &mut self,
    ) -> Result<Option<newscls::files::format::Chunk>, newscls::files::format::FileError> {
        if self.chunks == 0 {
            panic!("a decoder bug at byte 12345");
        }
        self.chunks -= 1;
        self.inner.next_chunk()
    }

    fn total(&self) -> Option<u64> {
        None
    }
}

/// Counts the rows written, shared with the test.
struct CountingWriter(Arc<std::sync::atomic::AtomicUsize>);

impl newscls::files::format::ChunkWriter for CountingWriter {
    fn write(
        &mut self,
        _chunk: &newscls::files::format::Chunk,
        results: &[newscls::files::format::RowResult],
    ) -> Result<(), newscls::files::format::FileError> {
        self.0
            .fetch_add(results.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), newscls::files::format::FileError> {
        Ok(())
    }
}

#[test]
fn a_reader_that_panics_mid_file_fails_the_run_instead_of_ending_it() {
    let dir = TempDir::new("files-reader-panic");
    let model = path(&dir, "model");
    write_fast_model_dir(&model);
    let mut config = newscls::infra::config::Config::default();
    config.model.dir = model;
    config.model.device = newscls::infra::config::DeviceChoice::Cpu;
    config.model.onnxruntime_library = Some(repo_path(
        &newscls::pipeline::inference::onnx::default_library_path().to_string_lossy(),
    ));
    let pipeline = Arc::new(newscls::files::Pipeline::load(&config).expect("the model loads"));
    let lines: String = (0..1000)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": i, "text": format!("Article {i}: shares rose.")})
            )
        })
        .collect();
    let fields = newscls::files::format::Fields {
        text: "text".into(),
        id: "id".into(),
        extra: None,
    };
    let reader = PanicsAfter {
        inner: newscls::files::format::JsonlReader::new(
            std::io::Cursor::new(lines.into_bytes()),
            fields,
            None,
        ),
        chunks: 1,
    };
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcome = newscls::files::run(
        &pipeline,
        Box::new(reader),
        Box::new(CountingWriter(written.clone())),
        HashSet::new(),
        "classify",
    );
    pipeline.shutdown();
    let error = match outcome {
        Ok(_) => panic!("a reader that panicked ended the run as if the file were done"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("reading the input failed") && error.contains("a decoder bug"),
        "{error}"
    );
    // The chunk read before the panic was classified and written.
    assert_eq!(written.load(std::sync::atomic::Ordering::SeqCst), 256);
}

/// As a new user runs it: the binary by its path, from a folder outside the repository, with no
/// NEWSCLS_* or ONNX Runtime variable set. The bundled model, the config file and the ONNX
/// Runtime library are found from the installation; a model directory that is not there is named
/// with the setting that fixes it.
#[test]
fn classify_works_from_any_directory() {
    let work = TempDir::new("anywhere");
    std::fs::write(
        work.path().join("news.csv"),
        "id,text\n1,\"Shares of the carmaker fell 5% after it cut its annual profit forecast.\"\n2,\"The striker scored twice in the final minutes to win the cup.\"\n",
    )
    .expect("write news.csv");
    let newcomer = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_newscls"));
        command.current_dir(work.path()).args(args);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("NEWSCLS") || key == "ORT_DYLIB_PATH" {
                command.env_remove(&key);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run newscls")
    };
    let output = newcomer(&["classify", "news.csv", "-o", "out.csv"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written = std::fs::read_to_string(work.path().join("out.csv")).expect("out.csv");
    let mut rows = csv::Reader::from_reader(written.as_bytes());
    let labels: Vec<String> = rows
        .deserialize::<HashMap<String, String>>()
        .map(|row| row.expect("a row")["label"].clone())
        .collect();
    assert_eq!(labels, ["business", "sport"], "{written}");

    let output = newcomer(&[
        "classify",
        "news.csv",
        "-o",
        "out2.csv",
        "--model-dir",
        "nowhere",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    for part in ["nowhere", "not found", "--model-dir", "model.dir"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}
