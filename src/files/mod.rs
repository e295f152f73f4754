//! `newscls classify` and `newscls eval`: files through the same pipeline as the server, without
//! HTTP.
//!
//! A reader thread reads the input a chunk at a time ([`mod@format`]); each chunk's valid texts go to
//! the [`Classifier`] in requests of `limits.max_client_batch_size`, several chunks at once, so
//! tokenization runs on every core and the batching queue forms the device's batches as it does
//! for concurrent HTTP clients; chunks are written back in input order as they complete. Memory
//! holds a few chunks, whatever the file's size. SIGINT or SIGTERM stops reading, lets the
//! chunks in flight finish, writes them and closes the output properly, so an interrupted run
//! leaves a valid file that `--resume` continues. [`eval`] runs the same loop into a tally
//! instead of a file.

pub mod eval;
pub mod format;
mod parquet_pages;
pub mod progress;

use std::collections::{HashSet, VecDeque};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::infra::config::{ClassifyArgs, Config, FileFormat, LimitsConfig};
use crate::infra::metrics::Metrics;
use crate::lifecycle::reload::ReloadError;
use crate::pipeline::classify::{check_text, Classifier, ClassifyError, ClassifyRequest, Deadline};
use crate::pipeline::model::Head;
use format::{
    format_of, Chunk, ChunkData, ChunkReader, ChunkWriter, CsvReader, CsvWriter, Fields, FileError,
    InputRow, JsonlReader, JsonlWriter, ParquetReader, ParquetWriter, RowResult, WriteOptions,
};
use progress::Progress;

/// Chunks classified at once: enough for every core to tokenize while the model runs, few
/// enough to stay within the queue (3 x 256 texts < the default 1,024).
const CHUNKS_IN_FLIGHT: usize = 3;

/// Why a file run stopped.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Model(#[from] ReloadError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}")]
    Usage(String),
}

/// How a `classify` run ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done {
        errors: u64,
    },
    /// Stopped by this signal number after writing what was done.
    Interrupted(i32),
}

/// A loaded model behind a [`Classifier`], for files.
pub struct Pipeline {
    classifier: Classifier,
    limits: LimitsConfig,
    pub labels: Vec<String>,
    pub name: String,
    pub version: String,
    /// The ONNX file and the device it runs on, for reports: `model_quantized.onnx on cpu`.
    pub served_by: String,
    /// The model's calibration temperature, which its scores were computed with.
    pub temperature: f32,
    /// What its head was trained for (single- or multi-label), with its thresholds.
    pub head: Head,
}

impl Pipeline {
    /// The model `config.model` names (a directory or a registry URI), as the server loads it.
    pub fn load(config: &Config) -> Result<Self, FilesError> {
        let (classifier, _) = crate::service::start_classifier(config, Arc::new(Metrics::new()))?;
        let serving = classifier.serving();
        let (labels, name, version) = (
            serving.spec.labels.clone(),
            serving.spec.name.clone(),
            serving.spec.version.clone(),
        );
        let served_by = format!("{} on {}", serving.file.display(), serving.device.name());
        let temperature = serving.spec.temperature;
        let head = serving.spec.head.clone();
        classifier.mark_ready();
        Ok(Self {
            classifier,
            limits: config.limits.clone(),
            labels,
            name,
            version,
            served_by,
            temperature,
            head,
        })
    }

    /// One result per row, in order. Rows without a usable text get an error and cost nothing.
    pub async fn classify_rows(self: &Arc<Self>, rows: &[InputRow]) -> Vec<RowResult> {
        let mut results: Vec<RowResult> = rows
            .iter()
            .map(|row| RowResult {
                top: None,
                labels: None,
                scores: None,
                error: self.row_error(row),
            })
            .collect();
        let valid: Vec<usize> = (0..rows.len())
            .filter(|&i| results[i].error.is_none())
            .collect();
        let requests: Vec<_> = valid
            .chunks(self.limits.max_client_batch_size.max(1))
            .map(|indices| {
                let texts: Vec<String> = indices
                    .iter()
                    .map(|&i| rows[i].text.clone().unwrap_or_default())
                    .collect();
                let pipeline = self.clone();
                (
                    indices.to_vec(),
                    tokio::spawn(async move { pipeline.classify_texts(texts).await }),
                )
            })
            .collect();
        for (indices, request) in requests {
            let outcome = request
                .await
                .unwrap_or_else(|e| Err(ClassifyError::Inference(e.to_string())));
            match outcome {
                Ok(classification) => {
                    for (&i, text) in indices.iter().zip(classification.texts) {
                        let top = text
                            .ranked
                            .first()
                            .map(|best| (best.label.clone(), best.score));
                        results[i] = RowResult {
                            top,
                            labels: classification.multi_label.then(|| text.assigned.clone()),
                            scores: Some(text.scores),
                            error: None,
                        };
                    }
                }
                Err(e) => {
                    for &i in &indices {
                        results[i].error = Some(e.to_string());
                    }
                }
            }
        }
        results
    }

    /// Why a row cannot be classified, checked before any work: the server's own rules.
    fn row_error(&self, row: &InputRow) -> Option<String> {
        match &row.text {
            Err(reason) => Some(reason.clone()),
            Ok(text) => check_text(text, &self.limits)
                .err()
                .map(|problem| format!("the text {problem}")),
        }
    }

    /// Texts through the classifier; a full queue is waited out, not an error: nothing here has
    /// a caller to refuse.
    async fn classify_texts(
        &self,
        texts: Vec<String>,
    ) -> Result<crate::pipeline::classify::Classification, ClassifyError> {
        loop {
            let request =
                ClassifyRequest::new(texts.clone(), Deadline::after(Duration::from_secs(3600)));
            match self
                .classifier
                .classify(request, std::future::pending())
                .await
            {
                Err(ClassifyError::Overloaded { retry_after, .. }) => {
                    tokio::time::sleep(
                        retry_after.clamp(Duration::from_millis(5), Duration::from_secs(1)),
                    )
                    .await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Lets the inference workers finish and stop.
    pub fn shutdown(&self) {
        self.classifier.start_draining();
        self.classifier.shutdown();
    }
}

/// The format of `path` (or `--format`), for a run that reads or writes it.
fn resolve_format(
    path: Option<&Path>,
    given: Option<FileFormat>,
) -> Result<FileFormat, FilesError> {
    if let Some(format) = given {
        return Ok(format);
    }
    match path.filter(|p| *p != Path::new("-")) {
        None => Ok(FileFormat::Jsonl),
        Some(path) => format_of(path).ok_or_else(|| {
            FilesError::Usage(format!(
                "cannot tell the format of {} from its name; pass --format jsonl|csv|parquet",
                path.display()
            ))
        }),
    }
}

/// A reader for `input` (`None` or `-`: standard input).
pub fn open_reader(
    input: Option<&Path>,
    format: FileFormat,
    fields: Fields,
    limits: &LimitsConfig,
) -> Result<Box<dyn ChunkReader>, FilesError> {
    let max_row_bytes = limits.row_bytes();
    let file = input
        .filter(|p| *p != Path::new("-"))
        .map(Path::to_path_buf);
    let size = file
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len());
    let open = |path: &PathBuf| {
        std::fs::File::open(path).map_err(|e| FileError::io(&path.display().to_string(), e))
    };
    Ok(match (format, &file) {
        (FileFormat::Parquet, Some(path)) => {
            Box::new(ParquetReader::open(path, fields, max_row_bytes)?)
        }
        (FileFormat::Parquet, None) => {
            return Err(FilesError::Usage(
                "Parquet is read from a file (its index is at the end), not standard input".into(),
            ))
        }
        (FileFormat::Jsonl, Some(path)) => Box::new(
            JsonlReader::new(BufReader::with_capacity(1 << 20, open(path)?), fields, size)
                .with_max_line_bytes(max_row_bytes),
        ),
        (FileFormat::Jsonl, None) => Box::new(
            JsonlReader::new(BufReader::new(std::io::stdin()), fields, None)
                .with_max_line_bytes(max_row_bytes),
        ),
        (FileFormat::Csv, Some(path)) => Box::new(CsvReader::with_max_record_bytes(
            open(path)?,
            fields,
            size,
            max_row_bytes,
        )?),
        (FileFormat::Csv, None) => Box::new(CsvReader::with_max_record_bytes(
            std::io::stdin(),
            fields,
            None,
            max_row_bytes,
        )?),
    })
}

/// Refuses an output that is the input (the same file through another path, a symlink or a hard
/// link included): opening it for writing would empty the input before a row is read.
fn refuse_same_file(input: &Path, output: &Path) -> Result<(), FilesError> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(read), Ok(written)) = (std::fs::metadata(input), std::fs::metadata(output)) else {
        // An output that does not exist yet cannot be the input.
        return Ok(());
    };
    if (read.dev(), read.ino()) == (written.dev(), written.ino()) {
        return Err(FilesError::Usage(format!(
            "{} is the input file ({}): writing it would destroy the input; choose another output",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

/// `newscls classify`: see [`crate::infra::config::Command::Classify`].
pub fn classify(config: &Config, args: &ClassifyArgs) -> Result<Outcome, FilesError> {
    let input = args.input.as_deref();
    let output = args.output.as_deref().filter(|p| *p != Path::new("-"));
    let format = resolve_format(input, args.format)?;
    if let Some(path) = output {
        if let Some(other) = format_of(path).filter(|f| *f != format) {
            return Err(FilesError::Usage(format!(
                "{} would be {other:?}, but the input is {format:?}: the output keeps the input's \
                 format, so every field passes through unchanged",
                path.display()
            )));
        }
    }
    if let (Some(input), Some(output)) = (input.filter(|p| *p != Path::new("-")), output) {
        refuse_same_file(input, output)?;
    }
    if args.resume && output.is_none() {
        return Err(FilesError::Usage(
            "--resume needs --output FILE to continue".into(),
        ));
    }
    let fields = Fields {
        text: args.text_field.clone(),
        id: args.id_field.clone(),
        extra: None,
    };
    let reader = open_reader(input, format, fields, &config.limits)?;
    let resumed = match output {
        Some(path) if args.resume && path.exists() => {
            format::completed_ids(path, format, &args.id_field)?
        }
        _ => HashSet::new(),
    };
    let pipeline = Arc::new(Pipeline::load(config)?);
    let options = WriteOptions {
        id_field: args.id_field.clone(),
        labels: pipeline.labels.clone(),
        all_scores: args.all_scores,
        model: args
            .with_model
            .then(|| (pipeline.name.clone(), pipeline.version.clone())),
        multi_label: pipeline.head.is_multi_label(),
    };
    let append = args.resume && output.is_some_and(Path::exists);
    let sink = format::open_output(output, append)?;
    let writer: Box<dyn ChunkWriter> = match format {
        FileFormat::Jsonl => Box::new(JsonlWriter::new(sink, options)),
        FileFormat::Parquet => Box::new(ParquetWriter::new(sink, options)),
        FileFormat::Csv => {
            let headers = reader
                .csv_headers()
                .ok_or_else(|| FilesError::Usage("a CSV input needs a header row".into()))?;
            Box::new(CsvWriter::new(sink, &headers, options, !append)?)
        }
    };
    let outcome = run(&pipeline, reader, writer, resumed, "classify");
    pipeline.shutdown();
    outcome
}

/// The loop: read, classify a few chunks at once, write in order, until the input ends or a
/// signal asks to stop. The writer is closed on every path.
pub fn run(
    pipeline: &Arc<Pipeline>,
    mut reader: Box<dyn ChunkReader>,
    mut writer: Box<dyn ChunkWriter>,
    skip: HashSet<String>,
    what: &'static str,
) -> Result<Outcome, FilesError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("files")
        .build()
        .map_err(|e| FilesError::Usage(format!("cannot start the runtime: {e}")))?;
    let total = reader.total();
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Result<Chunk, FileError>>(2);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set only when the reader saw the end of the input: a channel that closes without it means
    // the reader stopped early, which is a failure, never the end of the file.
    let reached_end = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let (stop, reached_end) = (stop.clone(), reached_end.clone());
        std::thread::Builder::new()
            .name("files-reader".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // A decoder that panics on a malformed file (a third-party Parquet or CSV
                    // reader) is an error for this file, not the end of it.
                    let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        reader.next_chunk()
                    }))
                    .unwrap_or_else(|panic| Err(FileError::Invalid(reader_panic(&panic))))
                    .transpose();
                    let Some(next) = next else {
                        reached_end.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    };
                    let failed = next.is_err();
                    if chunks.blocking_send(next).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| FilesError::Usage(format!("cannot start the reader: {e}")))?
    };
    let mut progress = Progress::new(what, total);
    let result = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| FileError::io("signals", e))?;
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| FileError::io("signals", e))?;
        let mut in_flight: VecDeque<tokio::task::JoinHandle<(Chunk, Vec<RowResult>)>> = VecDeque::new();
        let mut interrupted = None;
        let mut input_done = false;
        loop {
            if (input_done || interrupted.is_some()) && in_flight.is_empty() {
                break;
            }
            let reading = !input_done && interrupted.is_none() && in_flight.len() < CHUNKS_IN_FLIGHT;
            tokio::select! {
                _ = interrupt.recv(), if interrupted.is_none() => interrupted = Some(2),
                _ = terminate.recv(), if interrupted.is_none() => interrupted = Some(15),
                next = received.recv(), if reading => match next {
                    Some(Ok(mut chunk)) => {
                        if !skip.is_empty() {
                            chunk.retain(|row| !skip.contains(&row.id));
                        }
                        let pipeline = pipeline.clone();
                        in_flight.push_back(tokio::spawn(async move {
                            let results = pipeline.classify_rows(&chunk.rows).await;
                            (chunk, results)
                        }));
                    }
                    Some(Err(e)) => return Err(e),
                    None if reached_end.load(std::sync::atomic::Ordering::SeqCst) => input_done = true,
                    None => {
                        return Err(FileError::Invalid(
                            "the input's reader stopped before the end of the file".into(),
                        ))
                    }
                },
                done = async { in_flight.front_mut().expect("guarded by the condition").await }, if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    let (chunk, results) = done.map_err(|e| FileError::Invalid(format!("a chunk failed: {e}")))?;
                    writer.write(&chunk, &results)?;
                    let errors = results.iter().filter(|r| r.error.is_some()).count() as u64;
                    progress.advance(
                        results.len() as u64,
                        errors,
                        chunk.position,
                        results.iter().filter_map(|r| r.top.as_ref().map(|(l, _)| l.as_str())),
                    );
                }
            }
        }
        Ok(interrupted)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(received);
    // The reader ends on its own once the input is done or the channel closes; one stopped
    // early may be blocked reading standard input, and the process exits without it.
    if reading.is_finished() || matches!(result, Ok(None)) {
        let _ = reading.join();
    }
    let closed = writer.finish();
    let interrupted = result?;
    closed?;
    let errors = progress.errors();
    let outcome = match interrupted {
        Some(signal) => Outcome::Interrupted(signal),
        None => Outcome::Done { errors },
    };
    progress.finish(match outcome {
        Outcome::Interrupted(_) => {
            " (interrupted: the output holds the rows above; --resume continues)"
        }
        Outcome::Done { .. } => "",
    });
    Ok(outcome)
}

/// What a reader's panic said, as an error message.
fn reader_panic(panic: &Box<dyn std::any::Any + Send>) -> String {
    let said = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!(
        "reading the input failed ({}); the output holds the rows before it",
        crate::infra::excerpt::bounded_message(&said)
    )
}

impl Chunk {
    /// Keeps the rows (and their data) for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&InputRow) -> bool) {
        let kept: Vec<bool> = self.rows.iter().map(&keep).collect();
        let mut flags = kept.iter();
        self.rows.retain(|_| *flags.next().unwrap_or(&true));
        match &mut self.data {
            ChunkData::Jsonl(lines) => {
                let mut flags = kept.iter();
                lines.retain(|_| *flags.next().unwrap_or(&true));
            }
            ChunkData::Csv(records) => {
                let mut flags = kept.iter();
                records.retain(|_| *flags.next().unwrap_or(&true));
            }
            ChunkData::Parquet(batch) => {
                let mask = arrow_array::BooleanArray::from(kept);
                if let Ok(filtered) = arrow_select::filter::filter_record_batch(batch, &mask) {
                    *batch = filtered;
                }
            }
        }
    }
}
