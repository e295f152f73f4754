//! JSONL: one JSON object per line, fields kept in order and as written.

use super::*;

/// A JSON object's fields in order, values kept as written.
pub(super) struct OrderedObject(pub(super) JsonFields);

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
pub(super) fn json_id(value: &RawValue) -> String {
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
                if !options.writes(key) {
                    field(&mut out, key, value.get());
                }
            }
            if let Some((label, score)) = &result.top {
                field(&mut out, "label", &json_text(label));
                field(&mut out, "score", &json_number(*score));
            }
            if let Some(labels) = &result.labels {
                let labels: Vec<String> = labels.iter().map(|l| json_text(l)).collect();
                field(&mut out, "labels", &format!("[{}]", labels.join(",")));
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
pub(super) fn json_number(value: f32) -> String {
    serde_json::to_string(&value).unwrap_or_else(|_| "null".into())
}

/// A generated id (a row number) as a JSON number, any other id as a string.
fn json_string_or_number(id: &str) -> String {
    match id.parse::<u64>() {
        Ok(number) => number.to_string(),
        Err(_) => json_text(id),
    }
}
