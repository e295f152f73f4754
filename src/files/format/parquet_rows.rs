//! Parquet: a record batch per chunk in, a row group at a time out; oversized pages found from
//! their headers and never read.

use super::*;

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
            if !options.writes(field.name()) {
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
        if options.multi_label {
            fields.push(Arc::new(Field::new("labels", DataType::Utf8, true)));
            columns.push(text(&|r| r.labels.as_ref().map(|l| l.join(","))));
        }
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
