//! Row files, a chunk of rows at a time: JSONL, CSV and Parquet in and out.
//!
//! A reader yields [`Chunk`]s: each row's id and text (or why it has none), plus the row as read,
//! so the writer can pass every other field through unchanged. JSONL fields keep their order and
//! their exact JSON (numbers are not re-printed); CSV cells are bytes; Parquet stays columnar
//! (a chunk is one record batch and gains columns). Nothing holds more than a chunk (readers)
//! or a row group (the Parquet writer) in memory, whatever the file's size. One module per
//! format: `jsonl_rows`, `csv_rows`, `parquet_rows`; resuming and the output file here.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use serde_json::value::RawValue;

use super::parquet_pages::{self, OversizedRows};
use crate::infra::config::FileFormat;

// One module per format; they share this module's types and imports (`use super::*`).
mod csv_rows;
mod jsonl_rows;
mod parquet_rows;

pub use csv_rows::{CsvReader, CsvWriter};
use jsonl_rows::{json_id, json_number, OrderedObject};
pub use jsonl_rows::{JsonlReader, JsonlWriter};
pub use parquet_rows::{ParquetReader, ParquetWriter, PAGE_CAP_ROWS};

/// Rows per chunk read from JSONL and CSV, and per Parquet record batch.
pub const CHUNK_ROWS: usize = 256;

/// Rows per Parquet row group written: what the writer holds in memory at most.
const ROW_GROUP_ROWS: usize = 8192;

/// Output fields the classifier writes; an input field of the same name is replaced. A
/// multi-label model's answers add `labels` ([`WriteOptions::writes`]).
const WRITTEN: &[&str] = &["label", "score", "scores", "model", "error"];

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl FileError {
    pub fn io(path: &str, error: impl std::fmt::Display) -> Self {
        FileError::Io {
            path: path.to_string(),
            reason: error.to_string(),
        }
    }
}

/// The format a path's extension names.
pub fn format_of(path: &Path) -> Option<FileFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
        "csv" => Some(FileFormat::Csv),
        "parquet" | "pq" => Some(FileFormat::Parquet),
        _ => None,
    }
}

/// One input row as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct InputRow {
    /// The id field as text (a JSON string's content, any other JSON value as written, a CSV
    /// cell), else the row's number from 0.
    pub id: String,
    /// The text, or why the row has none.
    pub text: Result<String, String>,
    /// The value of the reader's extra field (eval's true label), when it has one.
    pub extra: Option<String>,
}

/// A JSON object's fields in order, each value as written.
pub type JsonFields = Vec<(String, Box<RawValue>)>;

/// Rows as read, for the writer to pass through.
pub enum ChunkData {
    /// Each line's fields, or `None` for a line that is not a JSON object.
    Jsonl(Vec<Option<JsonFields>>),
    Csv(Vec<csv::ByteRecord>),
    Parquet(RecordBatch),
}

pub struct Chunk {
    pub rows: Vec<InputRow>,
    pub data: ChunkData,
    /// Input bytes consumed so far (JSONL, CSV) or rows (Parquet), for progress.
    pub position: u64,
}

/// What the pipeline found for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// The top label and its score.
    pub top: Option<(String, f32)>,
    /// A multi-label model's labels over their thresholds, best first.
    pub labels: Option<Vec<String>>,
    /// Every label's score in the model's label order (with --all-scores).
    pub scores: Option<Vec<f32>>,
    pub error: Option<String>,
}

/// Where to find the fields of a row.
#[derive(Debug, Clone)]
pub struct Fields {
    pub text: String,
    pub id: String,
    /// Read too (eval's label field).
    pub extra: Option<String>,
}

pub trait ChunkReader: Send {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, FileError>;
    /// How far the input goes in [`Chunk::position`]'s unit, when known.
    fn total(&self) -> Option<u64>;
    /// The header row of a CSV input.
    fn csv_headers(&self) -> Option<csv::ByteRecord> {
        None
    }
}

pub trait ChunkWriter {
    fn write(&mut self, chunk: &Chunk, results: &[RowResult]) -> Result<(), FileError>;
    /// Flushes and closes (a Parquet file gets its footer). Called on every exit path that
    /// leaves a file behind.
    fn finish(self: Box<Self>) -> Result<(), FileError>;
}

/// The text of a row from its raw bytes: UTF-8 is checked here, per row, so one bad row does
/// not stop the file.
fn text_of(bytes: Option<&[u8]>, field: &str) -> Result<String, String> {
    let bytes = bytes.ok_or_else(|| format!("no `{field}` field"))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("`{field}` is not valid UTF-8"))
}

/// What the writers add to each row.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub id_field: String,
    /// The model's labels, in score order (for --all-scores).
    pub labels: Vec<String>,
    pub all_scores: bool,
    /// The model's name and version (with --with-model).
    pub model: Option<(String, String)>,
    /// The model is multi-label: each row also gets `labels`, the labels over their
    /// thresholds (a list in JSONL; joined by commas in CSV and Parquet, as KServe's `label`).
    pub multi_label: bool,
}

impl WriteOptions {
    /// Whether the output has its own field `name`, replacing an input field of that name.
    pub fn writes(&self, name: &str) -> bool {
        WRITTEN.contains(&name) || (self.multi_label && name == "labels")
    }
}

// --- Resuming ------------------------------------------------------------------------------------

/// The ids an earlier run wrote to `path`, after cutting off a last row it did not finish.
/// The file is then ready to be appended to.
pub fn completed_ids(
    path: &Path,
    format: FileFormat,
    id_field: &str,
) -> Result<HashSet<String>, FileError> {
    let name = path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| FileError::io(&name, e))?;
    let mut ids = HashSet::new();
    let complete_until = match format {
        FileFormat::Jsonl => {
            let mut reader = BufReader::new(&mut file);
            let (mut offset, mut complete) = (0u64, 0u64);
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| FileError::io(&name, e))?;
                if read == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                offset += read as u64;
                let Ok(OrderedObject(fields)) = serde_json::from_slice::<OrderedObject>(&line)
                else {
                    break;
                };
                if let Some((_, id)) = fields.iter().find(|(k, _)| k == id_field) {
                    ids.insert(json_id(id));
                }
                complete = offset;
            }
            complete
        }
        FileFormat::Csv => {
            let length = file.metadata().map_err(|e| FileError::io(&name, e))?.len();
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(BufReader::new(&mut file));
            let headers = reader
                .byte_headers()
                .map_err(|e| FileError::io(&name, e))?
                .clone();
            let id_column = headers
                .iter()
                .position(|h| h == id_field.as_bytes())
                .ok_or_else(|| {
                    FileError::Invalid(format!("{name} has no `{id_field}` column to resume from"))
                })?;
            let mut complete = reader.position().byte();
            let mut record = csv::ByteRecord::new();
            while reader
                .read_byte_record(&mut record)
                .map_err(|e| FileError::io(&name, e))?
            {
                let end = reader.position().byte();
                // The last record counts only if its line ended: a killed writer may have left
                // half of it.
                if end == length && !ends_with_newline(path)? {
                    break;
                }
                if record.len() != headers.len() {
                    break;
                }
                if let Some(id) = record.get(id_column) {
                    ids.insert(String::from_utf8_lossy(id).into_owned());
                }
                complete = end;
            }
            complete
        }
        FileFormat::Parquet => {
            return Err(FileError::Invalid(
                "--resume appends to JSONL or CSV output; a Parquet file cannot be appended to"
                    .into(),
            ))
        }
    };
    file.set_len(complete_until)
        .map_err(|e| FileError::io(&name, e))?;
    file.seek(SeekFrom::End(0))
        .map_err(|e| FileError::io(&name, e))?;
    Ok(ids)
}

fn ends_with_newline(path: &Path) -> Result<bool, FileError> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| FileError::io(&name, e))?;
    if file.seek(SeekFrom::End(-1)).is_err() {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact(&mut last)
        .map_err(|e| FileError::io(&name, e))?;
    Ok(last[0] == b'\n')
}

/// Standard output, buffered, or a file created (or appended to, when resuming).
pub fn open_output(path: Option<&Path>, append: bool) -> Result<Box<dyn Write + Send>, FileError> {
    match path {
        None => Ok(Box::new(BufWriter::new(std::io::stdout()))),
        Some(path) if path == Path::new("-") => Ok(Box::new(BufWriter::new(std::io::stdout()))),
        Some(path) => {
            let name = path.display().to_string();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(path)
                .map_err(|e| FileError::io(&name, e))?;
            Ok(Box::new(BufWriter::with_capacity(1 << 20, file)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_record_past_the_cap_is_skipped_to_its_end_and_the_next_one_read() {
        let input = "id,text\n1,short\n2,\"long, \"\"quoted\"\"\nand past the cap\"\n3,after\n";
        let fields = Fields {
            text: "text".into(),
            id: "id".into(),
            extra: None,
        };
        let mut reader =
            CsvReader::with_max_record_bytes(std::io::Cursor::new(input), fields, None, 16)
                .expect("a reader");
        let chunk = reader.next_chunk().expect("rows").expect("a chunk");
        let texts: Vec<_> = chunk.rows.iter().map(|r| r.text.clone()).collect();
        assert_eq!(texts[0], Ok("short".to_string()));
        assert!(
            matches!(&texts[1], Err(e) if e.contains("max_row_bytes")),
            "{texts:?}"
        );
        assert_eq!(texts[2], Ok("after".to_string()));
        assert_eq!(chunk.rows[1].id, "1", "the skipped row's number");
        assert!(reader.next_chunk().expect("the end").is_none());
    }

    fn fields() -> Fields {
        Fields {
            text: "text".into(),
            id: "id".into(),
            extra: Some("label".into()),
        }
    }

    #[test]
    fn jsonl_rows_keep_their_fields_in_order_and_bad_lines_become_row_errors() {
        let input = "{\"z\":1.50,\"text\":\"hello\",\"id\":\"a\",\"label\":\"x\"}\n\n\
                     not json\n{\"id\":7}\n{\"text\":3}\n"
            .as_bytes()
            .to_vec();
        let mut reader = JsonlReader::new(std::io::Cursor::new(input), fields(), None);
        let chunk = reader.next_chunk().expect("read").expect("a chunk");
        let ids: Vec<&str> = chunk.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["a", "1", "7", "3"],
            "blank lines are skipped, rows numbered from 0"
        );
        assert_eq!(chunk.rows[0].text.as_deref(), Ok("hello"));
        assert_eq!(chunk.rows[0].extra.as_deref(), Some("x"));
        assert!(chunk.rows[1]
            .text
            .as_ref()
            .is_err_and(|e| e.contains("not a JSON object")));
        assert!(chunk.rows[2]
            .text
            .as_ref()
            .is_err_and(|e| e.contains("no `text` field")));
        assert!(chunk.rows[3]
            .text
            .as_ref()
            .is_err_and(|e| e.contains("not a string")));

        let mut out = Vec::new();
        let options = WriteOptions {
            id_field: "id".into(),
            labels: vec!["x".into(), "y".into()],
            all_scores: true,
            multi_label: false,
            model: None,
        };
        let results: Vec<RowResult> = chunk
            .rows
            .iter()
            .map(|r| match &r.text {
                Ok(_) => RowResult {
                    top: Some(("y".into(), 0.75)),
                    labels: None,
                    scores: Some(vec![0.25, 0.75]),
                    error: None,
                },
                Err(e) => RowResult {
                    top: None,
                    labels: None,
                    scores: None,
                    error: Some(e.clone()),
                },
            })
            .collect();
        let mut writer = Box::new(JsonlWriter::new(&mut out, options));
        writer.write(&chunk, &results).expect("write");
        writer.finish().expect("finish");
        let text = String::from_utf8(out).expect("utf-8");
        let first = text.lines().next().expect("a line");
        assert_eq!(
            first,
            r#"{"z":1.50,"text":"hello","id":"a","label":"y","score":0.75,"scores":{"x":0.25,"y":0.75}}"#,
            "fields in order, numbers as written, the gold label replaced"
        );
        assert!(text
            .lines()
            .nth(1)
            .expect("line")
            .starts_with(r#"{"id":1,"error":"#));
    }

    #[test]
    fn resuming_cuts_a_half_written_last_line_and_lists_the_ids_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"label\":\"x\"}\n{\"id\":2}\n{\"id\":\"c\",\"lab",
        )
        .expect("write");
        let ids = completed_ids(&path, FileFormat::Jsonl, "id").expect("resume");
        assert_eq!(ids, HashSet::from(["a".to_string(), "2".to_string()]));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"id\":\"a\",\"label\":\"x\"}\n{\"id\":2}\n"
        );
        let csv_path = dir.path().join("out.csv");
        std::fs::write(&csv_path, "id,text,label\n1,\"two\nlines\",x\n2,\"half").expect("write");
        let ids = completed_ids(&csv_path, FileFormat::Csv, "id").expect("resume");
        assert_eq!(ids, HashSet::from(["1".to_string()]));
        assert_eq!(
            std::fs::read_to_string(&csv_path).expect("read"),
            "id,text,label\n1,\"two\nlines\",x\n"
        );
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(format_of(Path::new("a/b.JSONL")), Some(FileFormat::Jsonl));
        assert_eq!(format_of(Path::new("b.csv")), Some(FileFormat::Csv));
        assert_eq!(format_of(Path::new("b.parquet")), Some(FileFormat::Parquet));
        assert_eq!(format_of(Path::new("b.txt")), None);
    }
}
