//! Row files, a chunk of rows at a time: JSONL, CSV and Parquet in and out.
//!
//! A reader yields [`Chunk`]s: each row's id and text (or why it has none), plus the row as read,
//! so the writer can pass every other field through unchanged. JSONL fields keep their order and
//! their exact JSON (numbers are not re-printed); CSV cells are bytes; Parquet stays columnar
//! (a chunk is one record batch and gains columns). Nothing holds more than a chunk (readers)
//! or a row group (the Parquet writer) in memory, whatever the file's size.

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

/// Rows per chunk read from JSONL and CSV, and per Parquet record batch.
pub const CHUNK_ROWS: usize = 256;

/// Rows per Parquet row group written: what the writer holds in memory at most.
const ROW_GROUP_ROWS: usize = 8192;

/// Output fields the classifier writes; an input field of the same name is replaced.
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

// --- JSONL ---------------------------------------------------------------------------------------

/// A JSON object's fields in order, values kept as written.
struct OrderedObject(JsonFields);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(entry);
                }
                Ok(OrderedObject(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON value as an id: a string's content, anything else as written.
fn json_id(value: &RawValue) -> String {
    serde_json::from_str::<String>(value.get()).unwrap_or_else(|_| value.get().to_string())
}

pub struct JsonlReader<R> {
    input: R,
    fields: Fields,
    row: u64,
    position: u64,
    total: Option<u64>,
    line: Vec<u8>,
    max_line_bytes: usize,
}

impl<R: BufRead + Send> JsonlReader<R> {
    pub fn new(input: R, fields: Fields, total: Option<u64>) -> Self {
        Self {
            input,
            fields,
            row: 0,
            position: 0,
            total,
            line: Vec::new(),
            max_line_bytes: usize::MAX,
        }
    }

    /// Lines longer than `bytes` become row errors, read past without being held.
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }
}

/// Reads one line (through `\n`) into `line`, keeping at most `cap` bytes of it; the rest of a
/// longer line is consumed without being stored. Returns the bytes consumed and whether the line
/// was longer than `cap`.
fn read_line_capped(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut consumed, mut too_long) = (0, false);
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok((consumed, too_long));
        }
        let (taken, ended) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        if !too_long {
            if line.len() + taken > cap {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buffer[..taken]);
            }
        }
        input.consume(taken);
        consumed += taken;
        if ended {
            return Ok((consumed, too_long));
        }
    }
}

impl<R: BufRead + Send> ChunkReader for JsonlReader<R> {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, FileError> {
        let mut rows = Vec::new();
        let mut data = Vec::new();
        while rows.len() < CHUNK_ROWS {
            self.line.clear();
            let (read, too_long) =
                read_line_capped(&mut self.input, &mut self.line, self.max_line_bytes)
                    .map_err(|e| FileError::io("input", e))?;
            if read == 0 {
                break;
            }
            self.position += read as u64;
            if !too_long && self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let number = self.row;
            self.row += 1;
            let parsed = if too_long {
                Err(format!(
                    "the line is {read} bytes, more than limits.max_row_bytes ({})",
                    self.max_line_bytes
                ))
            } else {
                std::str::from_utf8(&self.line)
                    .map_err(|_| "the line is not valid UTF-8".to_string())
                    .and_then(|line| {
                        serde_json::from_str::<OrderedObject>(line)
                            .map_err(|e| format!("the line is not a JSON object: {e}"))
                    })
            };
            let (row, fields) = match parsed {
                Ok(OrderedObject(fields)) => {
                    let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                    let text = match find(&self.fields.text) {
                        None => Err(format!("no `{}` field", self.fields.text)),
                        Some(value) => serde_json::from_str::<String>(value.get())
                            .map_err(|_| format!("`{}` is not a string", self.fields.text)),
                    };
                    let row = InputRow {
                        id: find(&self.fields.id)
                            .map_or_else(|| number.to_string(), |v| json_id(v)),
                        text,
                        extra: self
                            .fields
                            .extra
                            .as_deref()
                            .and_then(find)
                            .map(|v| json_id(v)),
                    };
                    (row, Some(fields))
                }
                Err(reason) => (
                    InputRow {
                        id: number.to_string(),
                        text: Err(reason),
                        extra: None,
                    },
                    None,
                ),
            };
            rows.push(row);
            data.push(fields);
        }
        Ok((!rows.is_empty()).then(|| Chunk {
            rows,
            data: ChunkData::Jsonl(data),
            position: self.position,
        }))
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}

pub struct JsonlWriter<W: Write> {
    output: W,
    options: WriteOptions,
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
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(output: W, options: WriteOptions) -> Self {
        Self { output, options }
    }
}

impl<W: Write> ChunkWriter for JsonlWriter<W> {
    fn write(&mut self, chunk: &Chunk, results: &[RowResult]) -> Result<(), FileError> {
        let ChunkData::Jsonl(lines) = &chunk.data else {
            return Err(FileError::Invalid("JSONL output needs JSONL rows".into()));
        };
        let options = &self.options;
        let mut out = Vec::with_capacity(4096);
        for ((row, fields), result) in chunk.rows.iter().zip(lines).zip(results) {
            out.clear();
            out.push(b'{');
            let mut first = true;
            let mut field = |out: &mut Vec<u8>, key: &str, value: &str| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
                out.push(b':');
                out.extend_from_slice(value.as_bytes());
            };
            let fields = fields.as_deref().unwrap_or_default();
            if !fields.iter().any(|(k, _)| *k == options.id_field) {
                field(&mut out, &options.id_field, &json_string_or_number(&row.id));
            }
            for (key, value) in fields {
                if !WRITTEN.contains(&key.as_str()) {
                    field(&mut out, key, value.get());
                }
            }
            if let Some((label, score)) = &result.top {
                field(&mut out, "label", &json_text(label));
                field(&mut out, "score", &json_number(*score));
            }
            if let (true, Some(scores)) = (options.all_scores, &result.scores) {
                // In the model's label order, which a JSON map would not keep.
                let pairs: Vec<String> = options
                    .labels
                    .iter()
                    .zip(scores)
                    .map(|(label, score)| format!("{}:{}", json_text(label), json_number(*score)))
                    .collect();
                field(&mut out, "scores", &format!("{{{}}}", pairs.join(",")));
            }
            if let Some((name, version)) = &options.model {
                let model = serde_json::json!({"name": name, "version": version});
                field(&mut out, "model", &model.to_string());
            }
            if let Some(error) = &result.error {
                field(&mut out, "error", &json_text(error));
            }
            out.extend_from_slice(b"}\n");
            self.output
                .write_all(&out)
                .map_err(|e| FileError::io("output", e))?;
        }
        // A chunk is on disk before the next: a killed run leaves whole lines behind, at most
        // one partial line, which --resume cuts off.
        self.output.flush().map_err(|e| FileError::io("output", e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), FileError> {
        self.output.flush().map_err(|e| FileError::io("output", e))
    }
}

fn json_text(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// A score as JSON in its shortest form, e.g. `0.6972342` (not the f64 widening
/// `0.6972342133522034`).
fn json_number(value: f32) -> String {
    serde_json::to_string(&value).unwrap_or_else(|_| "null".into())
}

/// A generated id (a row number) as a JSON number, any other id as a string.
fn json_string_or_number(id: &str) -> String {
    match id.parse::<u64>() {
        Ok(number) => number.to_string(),
        Err(_) => json_text(id),
    }
}

// --- CSV -------------------------------------------------------------------------------------------

pub struct CsvReader<R: Read> {
    records: CsvRecords<R>,
    fields: Fields,
    text_column: usize,
    id_column: Option<usize>,
    extra_column: Option<usize>,
    headers: csv::ByteRecord,
    row: u64,
    total: Option<u64>,
}

/// What [`CsvRecords::next`] found.
enum NextRecord {
    Record(csv::ByteRecord),
    /// A record past the cap, skipped to its end without being held: how many bytes it had.
    TooLong(u64),
    End,
}

/// CSV records one at a time, at most `cap` bytes each held. The parser (csv-core, the csv
/// crate's own) keeps its place in quotes and escapes while a longer record's bytes are read
/// into a small scratch buffer and dropped, so the next record starts where it should and the
/// run goes on.
struct CsvRecords<R> {
    input: BufReader<R>,
    parser: csv_core::Reader,
    cap: usize,
    /// Input bytes consumed, for progress.
    consumed: u64,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: Read> CsvRecords<R> {
    fn new(input: R, cap: usize) -> Self {
        Self {
            input: BufReader::with_capacity(64 * 1024, input),
            parser: csv_core::Reader::new(),
            cap,
            consumed: 0,
            bytes: vec![0; cap.clamp(1, 1024)],
            ends: vec![0; 16],
        }
    }

    fn next(&mut self) -> std::io::Result<NextRecord> {
        use csv_core::ReadRecordResult;
        let (mut written, mut fields) = (0usize, 0usize);
        // Set once the record passes the cap: the bytes of it read so far, and where the rest go.
        let mut skipped: Option<u64> = None;
        let (mut scratch, mut scratch_ends) = (Vec::new(), Vec::new());
        loop {
            let input = self.input.fill_buf()?;
            let (result, read, out, ends) = match skipped {
                None => self.parser.read_record(
                    input,
                    &mut self.bytes[written..],
                    &mut self.ends[fields..],
                ),
                Some(_) => self
                    .parser
                    .read_record(input, &mut scratch, &mut scratch_ends),
            };
            self.input.consume(read);
            self.consumed += read as u64;
            match &mut skipped {
                None => (written, fields) = (written + out, fields + ends),
                Some(bytes) => *bytes += read as u64,
            }
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull
                    if skipped.is_some() => {}
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {
                    // Field ends count too: a record of commas is all ends.
                    let held = written + fields * std::mem::size_of::<usize>();
                    if held >= self.cap {
                        skipped = Some(written as u64);
                        scratch = vec![0; 64 * 1024];
                        scratch_ends = vec![0; 1024];
                    } else if matches!(result, ReadRecordResult::OutputFull) {
                        let grown = (self.bytes.len() * 2).min(self.cap.max(written + 1));
                        self.bytes.resize(grown.max(written + 1), 0);
                    } else {
                        self.ends.resize(self.ends.len() * 2, 0);
                    }
                }
                ReadRecordResult::Record => {
                    if let Some(bytes) = skipped {
                        return Ok(NextRecord::TooLong(bytes));
                    }
                    let mut record = csv::ByteRecord::with_capacity(written, fields);
                    let mut start = 0;
                    for &end in &self.ends[..fields] {
                        record.push_field(&self.bytes[start..end]);
                        start = end;
                    }
                    return Ok(NextRecord::Record(record));
                }
                ReadRecordResult::End => return Ok(NextRecord::End),
            }
        }
    }
}

impl<R: Read + Send> CsvReader<R> {
    pub fn new(input: R, fields: Fields, total: Option<u64>) -> Result<Self, FileError> {
        Self::with_max_record_bytes(input, fields, total, usize::MAX)
    }

    /// A reader that holds at most `cap` bytes of a record: a longer one is skipped and gets a
    /// row error (see [`CsvRecords`]).
    pub fn with_max_record_bytes(
        input: R,
        fields: Fields,
        total: Option<u64>,
        cap: usize,
    ) -> Result<Self, FileError> {
        let mut records = CsvRecords::new(input, cap);
        let headers = match records.next().map_err(|e| FileError::io("input", e))? {
            NextRecord::Record(headers) => headers,
            NextRecord::TooLong(bytes) => {
                return Err(FileError::Invalid(format!(
                "the CSV header is {bytes} bytes or more, more than limits.max_row_bytes ({cap})"
            )))
            }
            NextRecord::End => csv::ByteRecord::new(),
        };
        let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
        let text_column = column(&fields.text).ok_or_else(|| {
            FileError::Invalid(format!("the CSV header has no `{}` column", fields.text))
        })?;
        Ok(Self {
            id_column: column(&fields.id),
            extra_column: fields.extra.as_deref().and_then(column),
            text_column,
            headers,
            fields,
            records,
            row: 0,
            total,
        })
    }
}

impl<R: Read + Send> ChunkReader for CsvReader<R> {
    fn csv_headers(&self) -> Option<csv::ByteRecord> {
        Some(self.headers.clone())
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, FileError> {
        let mut rows = Vec::new();
        let mut records = Vec::new();
        while rows.len() < CHUNK_ROWS {
            let next = self.records.next().map_err(|e| FileError::io("input", e))?;
            let number = self.row;
            let record = match next {
                NextRecord::End => break,
                NextRecord::Record(record) => record,
                NextRecord::TooLong(bytes) => {
                    self.row += 1;
                    // Its cells were never held: empty, but for the id, its row number.
                    let record: csv::ByteRecord = (0..self.headers.len())
                        .map(|c| match Some(c) == self.id_column {
                            true => number.to_string().into_bytes(),
                            false => Vec::new(),
                        })
                        .collect();
                    rows.push(InputRow {
                        id: number.to_string(),
                        text: Err(format!(
                            "the CSV record is {bytes} bytes or more, more than \
                             limits.max_row_bytes ({})",
                            self.records.cap
                        )),
                        extra: None,
                    });
                    records.push(record);
                    continue;
                }
            };
            self.row += 1;
            let cell = |column: Option<usize>| column.and_then(|c| record.get(c));
            rows.push(InputRow {
                id: cell(self.id_column).map_or_else(
                    || number.to_string(),
                    |id| String::from_utf8_lossy(id).into_owned(),
                ),
                text: text_of(cell(Some(self.text_column)), &self.fields.text),
                extra: cell(self.extra_column).map(|v| String::from_utf8_lossy(v).into_owned()),
            });
            records.push(record);
        }
        Ok((!rows.is_empty()).then(|| Chunk {
            rows,
            data: ChunkData::Csv(records),
            position: self.records.consumed,
        }))
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}

pub struct CsvWriter<W: Write> {
    writer: csv::Writer<W>,
    options: WriteOptions,
    /// Input columns passed through, by index.
    kept: Vec<usize>,
    /// The input has no id column: the row's id goes first.
    add_id: bool,
}

impl<W: Write> CsvWriter<W> {
    /// `write_header` is false when appending to an earlier run's output (--resume).
    pub fn new(
        output: W,
        input_headers: &csv::ByteRecord,
        options: WriteOptions,
        write_header: bool,
    ) -> Result<Self, FileError> {
        let mut writer = csv::Writer::from_writer(output);
        let kept: Vec<usize> = input_headers
            .iter()
            .enumerate()
            .filter(|(_, h)| !WRITTEN.iter().any(|w| w.as_bytes() == *h))
            .map(|(i, _)| i)
            .collect();
        let add_id = !input_headers
            .iter()
            .any(|h| h == options.id_field.as_bytes());
        if write_header {
            let mut header: Vec<Vec<u8>> = Vec::new();
            if add_id {
                header.push(options.id_field.as_bytes().to_vec());
            }
            header.extend(kept.iter().map(|&i| input_headers[i].to_vec()));
            header.extend(added_columns(&options).into_iter().map(String::into_bytes));
            writer
                .write_record(&header)
                .map_err(|e| FileError::io("output", e))?;
        }
        Ok(Self {
            writer,
            options,
            kept,
            add_id,
        })
    }
}

/// The columns CSV and Parquet outputs gain, in order.
fn added_columns(options: &WriteOptions) -> Vec<String> {
    let mut columns = vec!["label".to_string(), "score".to_string()];
    if options.all_scores {
        columns.extend(options.labels.iter().map(|l| format!("score_{l}")));
    }
    if options.model.is_some() {
        columns.extend(["model_name".to_string(), "model_version".to_string()]);
    }
    columns.push("error".to_string());
    columns
}

impl<W: Write> ChunkWriter for CsvWriter<W> {
    fn write(&mut self, chunk: &Chunk, results: &[RowResult]) -> Result<(), FileError> {
        let ChunkData::Csv(records) = &chunk.data else {
            return Err(FileError::Invalid("CSV output needs CSV rows".into()));
        };
        let io = |e: csv::Error| FileError::io("output", e);
        for ((row, record), result) in chunk.rows.iter().zip(records).zip(results) {
            let mut cells: Vec<Vec<u8>> = Vec::new();
            if self.add_id {
                cells.push(row.id.as_bytes().to_vec());
            }
            cells.extend(
                self.kept
                    .iter()
                    .map(|&i| record.get(i).unwrap_or_default().to_vec()),
            );
            let (label, score) = match &result.top {
                Some((label, score)) => (label.clone(), json_number(*score)),
                None => (String::new(), String::new()),
            };
            cells.push(label.into_bytes());
            cells.push(score.into_bytes());
            if self.options.all_scores {
                let scores = result.scores.as_deref().unwrap_or_default();
                for index in 0..self.options.labels.len() {
                    cells.push(
                        scores
                            .get(index)
                            .map(|s| json_number(*s))
                            .unwrap_or_default()
                            .into_bytes(),
                    );
                }
            }
            if let Some((name, version)) = &self.options.model {
                cells.push(name.clone().into_bytes());
                cells.push(version.clone().into_bytes());
            }
            cells.push(result.error.clone().unwrap_or_default().into_bytes());
            self.writer.write_record(&cells).map_err(io)?;
        }
        self.writer.flush().map_err(|e| FileError::io("output", e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), FileError> {
        self.writer.flush().map_err(|e| FileError::io("output", e))
    }
}

// --- Parquet -------------------------------------------------------------------------------------

/// A Parquet page is decoded whole, so one may hold at most this many rows' byte cap
/// (`limits.max_row_bytes`); the rows of a larger page get an error and the page is never read.
/// Writers cut pages at about 1 MiB, so a real page stays far below it.
pub const PAGE_CAP_ROWS: u64 = 16;

pub struct ParquetReader {
    /// The rows in pages of a decodable size, every column.
    kept: BatchSource,
    /// The rows in oversized pages, every column but the text; `None` when there are none, or
    /// when the text is the only column (then their batches are made of nulls here).
    oversized: Option<BatchSource>,
    /// Where the oversized rows are, in row order.
    gaps: VecDeque<OversizedRows>,
    /// Every chunk's schema: the file's, with the text column nullable (an oversized row's text
    /// is null in the output).
    schema: SchemaRef,
    text_index: usize,
    fields: Fields,
    max_row_bytes: usize,
    page_cap: u64,
    row: u64,
    total: u64,
}

/// A record-batch reader taken from a given number of rows at a time.
struct BatchSource {
    batches: ParquetRecordBatchReader,
    pending: Option<RecordBatch>,
}

impl BatchSource {
    /// Up to `rows` rows: a batch as read, or the front of one (the rest is kept for later).
    fn take(&mut self, rows: usize) -> Option<Result<RecordBatch, arrow_schema::ArrowError>> {
        let batch = match self.pending.take() {
            Some(batch) => batch,
            None => match self.batches.next()? {
                Ok(batch) => batch,
                Err(error) => return Some(Err(error)),
            },
        };
        if batch.num_rows() > rows {
            self.pending = Some(batch.slice(rows, batch.num_rows() - rows));
            return Some(Ok(batch.slice(0, rows)));
        }
        Some(Ok(batch))
    }
}

impl ParquetReader {
    pub fn open(path: &Path, fields: Fields, max_row_bytes: usize) -> Result<Self, FileError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| FileError::io(&name, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| FileError::io(&name, e))?;
        let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let text_index = builder
            .schema()
            .index_of(&fields.text)
            .map_err(|_| FileError::Invalid(format!("{name} has no `{}` column", fields.text)))?;
        let schema = Arc::new(Schema::new(
            builder
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| match i == text_index {
                    true => Arc::new(f.as_ref().clone().with_nullable(true)),
                    false => f.clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let metadata = builder.metadata().clone();
        let descriptor = metadata.file_metadata().schema_descr_ptr();
        // Only a flat text column has one value per row in its pages; any other is refused as
        // not text when its first batch is read.
        let text_leaf = descriptor
            .columns()
            .iter()
            .position(|c| c.path().parts() == [fields.text.as_str()] && c.max_rep_level() == 0);
        let page_cap = (max_row_bytes as u64).saturating_mul(PAGE_CAP_ROWS);
        let gaps = match text_leaf {
            Some(leaf) => parquet_pages::oversized_rows(path, &metadata, leaf, page_cap)?,
            None => Vec::new(),
        };
        let build = |builder: ParquetRecordBatchReaderBuilder<File>| {
            builder
                .with_batch_size(CHUNK_ROWS)
                .build()
                .map(|batches| BatchSource {
                    batches,
                    pending: None,
                })
                .map_err(|e| FileError::io(&name, e))
        };
        let (kept, oversized) = match gaps.is_empty() {
            true => (build(builder)?, None),
            // Two readers over the same file: the rows in decodable pages, and the others
            // without their text column (their ids and other fields still come through).
            false => {
                let plan = RowPlan::new(&metadata, &gaps);
                let kept = build(
                    builder
                        .with_row_groups(plan.kept_groups)
                        .with_row_selection(plan.kept),
                )?;
                let others: Vec<usize> = (0..descriptor.num_columns())
                    .filter(|&leaf| Some(leaf) != text_leaf)
                    .collect();
                let oversized = match others.is_empty() {
                    true => None,
                    false => {
                        let file = File::open(path).map_err(|e| FileError::io(&name, e))?;
                        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                            .map_err(|e| FileError::io(&name, e))?;
                        let mask = ProjectionMask::leaves(&descriptor, others);
                        Some(build(
                            builder
                                .with_projection(mask)
                                .with_row_groups(plan.oversized_groups)
                                .with_row_selection(plan.oversized),
                        )?)
                    }
                };
                (kept, oversized)
            }
        };
        Ok(Self {
            kept,
            oversized,
            gaps: gaps.into(),
            schema,
            text_index,
            fields,
            max_row_bytes,
            page_cap,
            row: 0,
            total,
        })
    }

    /// The next `rows` rows of the gap at the current row: their other columns, a null text.
    fn oversized_batch(&mut self, rows: usize) -> Result<RecordBatch, FileError> {
        let text_type = self.schema.field(self.text_index).data_type().clone();
        let mut columns = match &mut self.oversized {
            Some(source) => source
                .take(rows)
                .ok_or_else(|| {
                    FileError::Invalid("the input ended before its metadata said".into())
                })?
                .map_err(|e| FileError::io("input", e))?
                .columns()
                .to_vec(),
            None => Vec::new(),
        };
        let rows = columns.first().map_or(rows, |c| c.len());
        columns.insert(
            self.text_index,
            arrow_array::new_null_array(&text_type, rows),
        );
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| FileError::Invalid(format!("input rows: {e}")))
    }

    /// Each row of `batch` with its id, its text or why it has none, and its extra field.
    fn rows_of(
        &self,
        batch: &RecordBatch,
        oversized: Option<u64>,
    ) -> Result<Vec<InputRow>, FileError> {
        let field = &self.fields.text;
        let column = batch.column(self.text_index).data_type().clone();
        let texts = match (&column, oversized) {
            (_, Some(_)) => None,
            (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, None) => {
                texts_of(batch, field)
            }
            // Bytes that may not be UTF-8: checked row by row below.
            (DataType::Binary | DataType::LargeBinary | DataType::BinaryView, None) => None,
            _ => {
                return Err(FileError::Invalid(format!(
                    "the `{field}` column holds {column:?}, not text"
                )))
            }
        };
        let binary = (texts.is_none() && oversized.is_none())
            .then(|| arrow_cast::cast(batch.column(self.text_index), &DataType::LargeBinary).ok())
            .flatten();
        let ids = texts_of(batch, &self.fields.id);
        let extras = self
            .fields
            .extra
            .as_deref()
            .and_then(|name| texts_of(batch, name));
        let longer = |bytes: usize| {
            format!(
                "`{field}` is {bytes} bytes, more than limits.max_row_bytes ({})",
                self.max_row_bytes
            )
        };
        let too_long = |text: String| match text.len() > self.max_row_bytes {
            true => Err(longer(text.len())),
            false => Ok(text),
        };
        Ok((0..batch.num_rows())
            .map(|i| {
                let number = self.row + i as u64;
                let text = match (oversized, &texts, &binary) {
                    (Some(page_bytes), _, _) => Err(format!(
                        "`{field}` is in a Parquet page of {page_bytes} bytes, more than {} \
                         (limits.max_row_bytes x {PAGE_CAP_ROWS}); the page was not read",
                        self.page_cap
                    )),
                    (None, Some(texts), _) => texts[i]
                        .clone()
                        .ok_or_else(|| format!("`{field}` is null"))
                        .and_then(too_long),
                    (None, None, Some(bytes)) => {
                        let bytes = bytes
                            .as_any()
                            .downcast_ref::<arrow_array::LargeBinaryArray>()
                            .filter(|b| b.is_valid(i))
                            .map(|b| b.value(i));
                        match bytes {
                            Some(b) if b.len() > self.max_row_bytes => Err(longer(b.len())),
                            bytes => text_of(bytes, field),
                        }
                    }
                    (None, None, None) => Err(format!("`{field}` could not be read")),
                };
                InputRow {
                    id: ids
                        .as_ref()
                        .and_then(|ids| ids[i].clone())
                        .unwrap_or_else(|| number.to_string()),
                    text,
                    extra: extras.as_ref().and_then(|e| e[i].clone()),
                }
            })
            .collect())
    }
}

/// The row groups and row selections of the two readers: rows in decodable pages, and rows in
/// oversized ones. A row group with no row for a reader is left out of it entirely, so neither
/// reader touches a page it does not need (an oversized dictionary page included).
struct RowPlan {
    kept_groups: Vec<usize>,
    kept: RowSelection,
    oversized_groups: Vec<usize>,
    oversized: RowSelection,
}

impl RowPlan {
    fn new(metadata: &ParquetMetaData, gaps: &[OversizedRows]) -> Self {
        let mut plan = RowPlan {
            kept_groups: Vec::new(),
            kept: RowSelection::default(),
            oversized_groups: Vec::new(),
            oversized: RowSelection::default(),
        };
        let (mut kept, mut oversized) = (Vec::new(), Vec::new());
        let mut start = 0u64;
        for (group, meta) in metadata.row_groups().iter().enumerate() {
            let end = start + meta.num_rows().max(0) as u64;
            // The group's rows as runs of (in a gap?, length).
            let mut runs: Vec<(bool, usize)> = Vec::new();
            let mut row = start;
            for gap in gaps
                .iter()
                .filter(|g| g.rows.start < end && g.rows.end > start)
            {
                let (from, to) = (gap.rows.start.max(start), gap.rows.end.min(end));
                if from > row {
                    runs.push((false, (from - row) as usize));
                }
                runs.push((true, (to - from) as usize));
                row = to;
            }
            if end > row {
                runs.push((false, (end - row) as usize));
            }
            let selectors = |want: bool| -> Vec<RowSelector> {
                runs.iter()
                    .map(|&(in_gap, rows)| match in_gap == want {
                        true => RowSelector::select(rows),
                        false => RowSelector::skip(rows),
                    })
                    .collect()
            };
            if runs.iter().any(|&(in_gap, _)| !in_gap) {
                plan.kept_groups.push(group);
                kept.extend(selectors(false));
            }
            if runs.iter().any(|&(in_gap, _)| in_gap) {
                plan.oversized_groups.push(group);
                oversized.extend(selectors(true));
            }
            start = end;
        }
        plan.kept = RowSelection::from(kept);
        plan.oversized = RowSelection::from(oversized);
        plan
    }
}

/// Column `name` of `batch` as optional texts per row: strings as they are, integers printed;
/// `None` when there is no such column or it holds something else.
fn texts_of(batch: &RecordBatch, name: &str) -> Option<Vec<Option<String>>> {
    let column = batch.column_by_name(name)?;
    let cast = arrow_cast::cast(column, &DataType::Utf8).ok()?;
    let strings = cast.as_any().downcast_ref::<StringArray>()?;
    Some(
        (0..strings.len())
            .map(|i| strings.is_valid(i).then(|| strings.value(i).to_string()))
            .collect(),
    )
}

impl ChunkReader for ParquetReader {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, FileError> {
        let gap = self.gaps.front().cloned();
        let (batch, oversized) = match gap {
            Some(gap) if gap.rows.start <= self.row => {
                let rows = (gap.rows.end - self.row).min(CHUNK_ROWS as u64) as usize;
                if self.row + rows as u64 == gap.rows.end {
                    self.gaps.pop_front();
                }
                (self.oversized_batch(rows)?, Some(gap.page_bytes))
            }
            _ => {
                let until_gap = gap.as_ref().map_or(u64::MAX, |g| g.rows.start - self.row);
                let rows = until_gap.min(CHUNK_ROWS as u64) as usize;
                let Some(batch) = self.kept.take(rows) else {
                    return match gap {
                        Some(_) => Err(FileError::Invalid(
                            "the input ended before its metadata said".into(),
                        )),
                        None => Ok(None),
                    };
                };
                let batch = batch.map_err(|e| FileError::io("input", e))?;
                // The same schema for every chunk, whichever reader it came from.
                let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                    .map_err(|e| FileError::Invalid(format!("input rows: {e}")))?;
                (batch, None)
            }
        };
        let rows = self.rows_of(&batch, oversized)?;
        self.row += batch.num_rows() as u64;
        Ok(Some(Chunk {
            rows,
            position: self.row,
            data: ChunkData::Parquet(batch),
        }))
    }

    fn total(&self) -> Option<u64> {
        Some(self.total)
    }
}

pub struct ParquetWriter<W: Write + Send> {
    writer: Option<ArrowWriter<W>>,
    output: Option<W>,
    options: WriteOptions,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(output: W, options: WriteOptions) -> Self {
        Self {
            writer: None,
            output: Some(output),
            options,
        }
    }
}

impl<W: Write + Send> ChunkWriter for ParquetWriter<W> {
    fn write(&mut self, chunk: &Chunk, results: &[RowResult]) -> Result<(), FileError> {
        let ChunkData::Parquet(batch) = &chunk.data else {
            return Err(FileError::Invalid(
                "Parquet output needs Parquet rows".into(),
            ));
        };
        let options = &self.options;
        let mut fields: Vec<Arc<Field>> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let schema = batch.schema();
        if schema.field_with_name(&options.id_field).is_err() {
            fields.push(Arc::new(Field::new(
                &options.id_field,
                DataType::Utf8,
                false,
            )));
            columns.push(Arc::new(StringArray::from_iter_values(
                chunk.rows.iter().map(|r| r.id.as_str()),
            )));
        }
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if !WRITTEN.contains(&field.name().as_str()) {
                fields.push(field.clone());
                columns.push(column.clone());
            }
        }
        let text = |f: &dyn Fn(&RowResult) -> Option<String>| -> ArrayRef {
            Arc::new(results.iter().map(f).collect::<StringArray>())
        };
        let number = |f: &dyn Fn(&RowResult) -> Option<f32>| -> ArrayRef {
            Arc::new(results.iter().map(f).collect::<Float32Array>())
        };
        fields.push(Arc::new(Field::new("label", DataType::Utf8, true)));
        columns.push(text(&|r| r.top.as_ref().map(|(l, _)| l.clone())));
        fields.push(Arc::new(Field::new("score", DataType::Float32, true)));
        columns.push(number(&|r| r.top.as_ref().map(|(_, s)| *s)));
        if options.all_scores {
            for (index, label) in options.labels.iter().enumerate() {
                fields.push(Arc::new(Field::new(
                    format!("score_{label}"),
                    DataType::Float32,
                    true,
                )));
                columns.push(number(&|r| {
                    r.scores.as_ref().and_then(|s| s.get(index).copied())
                }));
            }
        }
        if let Some((name, version)) = &options.model {
            fields.push(Arc::new(Field::new("model_name", DataType::Utf8, true)));
            columns.push(text(&|_| Some(name.clone())));
            fields.push(Arc::new(Field::new("model_version", DataType::Utf8, true)));
            columns.push(text(&|_| Some(version.clone())));
        }
        fields.push(Arc::new(Field::new("error", DataType::Utf8, true)));
        columns.push(text(&|r| r.error.clone()));
        let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| FileError::Invalid(format!("output rows: {e}")))?;
        if self.writer.is_none() {
            let output = self
                .output
                .take()
                .ok_or_else(|| FileError::Invalid("output closed".into()))?;
            let properties = WriterProperties::builder()
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .build();
            self.writer = Some(
                ArrowWriter::try_new(output, out.schema(), Some(properties))
                    .map_err(|e| FileError::io("output", e))?,
            );
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| FileError::Invalid("output closed".into()))?;
        writer.write(&out).map_err(|e| FileError::io("output", e))
    }

    fn finish(self: Box<Self>) -> Result<(), FileError> {
        match self.writer {
            Some(writer) => writer
                .close()
                .map(|_| ())
                .map_err(|e| FileError::io("output", e)),
            None => Ok(()),
        }
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
            model: None,
        };
        let results: Vec<RowResult> = chunk
            .rows
            .iter()
            .map(|r| match &r.text {
                Ok(_) => RowResult {
                    top: Some(("y".into(), 0.75)),
                    scores: Some(vec![0.25, 0.75]),
                    error: None,
                },
                Err(e) => RowResult {
                    top: None,
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
