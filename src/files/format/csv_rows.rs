//! CSV with a header row: cells as bytes, a record past the byte cap skipped in place.

use super::*;

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
            .filter(|(_, h)| !std::str::from_utf8(h).is_ok_and(|h| options.writes(h)))
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
    if options.multi_label {
        columns.push("labels".to_string());
    }
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
            if self.options.multi_label {
                let labels = result.labels.as_deref().unwrap_or_default();
                cells.push(labels.join(",").into_bytes());
            }
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
