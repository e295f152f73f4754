//! Which rows of a Parquet file sit in pages too large to decode, found from the page headers
//! alone.
//!
//! A Parquet decoder holds a page whole (a value is never split across pages), so one 200 MiB text
//! is 200 MiB in memory before any row cap could look at it. The headers say each page's size and
//! row count; reading only them (a few bytes per page, skipping the payloads) lets the reader leave
//! such pages unread and give their rows an error instead. The headers are Thrift compact
//! structs; the parquet crate keeps its own parser private, so the few fields needed are read here,
//! with every length and count taken as untrusted.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::ops::Range;
use std::path::Path;

use parquet::file::metadata::ParquetMetaData;

use super::format::FileError;
use crate::infra::wire::ByteReader;

/// Rows of one column that sit in a page (or behind a dictionary page) past the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedRows {
    /// Row numbers in the file, from 0.
    pub rows: Range<u64>,
    /// The page's size, the larger of its stored and its decoded size.
    pub page_bytes: u64,
}

/// The rows of column `column` (a top-level, non-repeated column) held in pages larger than
/// `cap` bytes, in row order. A data page past the cap costs its own rows; a dictionary page past
/// the cap costs its whole row group, whose data pages all refer to it. Only opening the file can
/// fail here: a broken header is left for the decoder to report where it is.
pub fn oversized_rows(
    path: &Path,
    metadata: &ParquetMetaData,
    column: usize,
    cap: u64,
) -> Result<Vec<OversizedRows>, FileError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| FileError::io(&name, e))?;
    let mut input = Compact::new(BufReader::with_capacity(64 * 1024, file));
    let mut found = Vec::new();
    let mut group_start = 0u64;
    for group in metadata.row_groups() {
        let group_rows = group.num_rows().max(0) as u64;
        let (start, length) = group.column(column).byte_range();
        let end = start.saturating_add(length);
        let mut offset = start;
        let mut row = group_start;
        while offset < end {
            // A header that does not parse ends the look at this column chunk: the decoder
            // fails at the same place, mid-way, with what it wrote so far kept.
            let Ok(header) = input.page_header(offset) else {
                break;
            };
            let page_bytes = header.compressed.max(header.uncompressed);
            if header.kind == PageKind::Dictionary && page_bytes > cap {
                found.push(OversizedRows {
                    rows: group_start..group_start + group_rows,
                    page_bytes,
                });
                break;
            }
            if header.kind == PageKind::Data {
                let rows = header.rows.min(group_start + group_rows - row);
                if page_bytes > cap && rows > 0 {
                    found.push(OversizedRows {
                        rows: row..row + rows,
                        page_bytes,
                    });
                }
                row += rows;
            }
            offset = input.position().saturating_add(header.compressed);
        }
        group_start += group_rows;
    }
    Ok(merged(found))
}

/// Adjacent ranges as one, so a run of oversized pages reads as one gap.
fn merged(ranges: Vec<OversizedRows>) -> Vec<OversizedRows> {
    let mut out: Vec<OversizedRows> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if last.rows.end == range.rows.start => {
                last.rows.end = range.rows.end;
                last.page_bytes = last.page_bytes.max(range.page_bytes);
            }
            _ => out.push(range),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageKind {
    Data,
    Dictionary,
    Other,
}

#[derive(Debug)]
struct PageHeader {
    kind: PageKind,
    compressed: u64,
    uncompressed: u64,
    /// Rows in a data page: DATA_PAGE's value count (levels, one per row in a flat column) or
    /// DATA_PAGE_V2's row count.
    rows: u64,
}

// Thrift compact protocol type ids.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// Nesting a header may use; Parquet's own go three deep. Deeper input is refused, not recursed.
const MAX_DEPTH: usize = 16;

/// Thrift compact structs over a [`ByteReader`].
struct Compact<R> {
    input: ByteReader<R>,
}

impl<R: Read + Seek> Compact<R> {
    fn new(input: R) -> Self {
        Self {
            input: ByteReader::new(input),
        }
    }

    fn position(&self) -> u64 {
        self.input.position()
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        self.input.byte()
    }

    fn varint(&mut self) -> std::io::Result<u64> {
        self.input.varint()
    }

    fn zigzag(&mut self) -> std::io::Result<i64> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A non-negative i32 field, as the sizes and counts of a page header are.
    fn count(&mut self) -> std::io::Result<u64> {
        u64::try_from(self.zigzag()?).map_err(|_| invalid("a negative size or count"))
    }

    /// The struct's fields one by one: `each(self, id, type)` reads the ones it knows and returns
    /// false for the others, which are skipped.
    fn fields(
        &mut self,
        depth: usize,
        mut each: impl FnMut(&mut Self, i16, u8) -> std::io::Result<bool>,
    ) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid("structs nested too deep"));
        }
        let mut id: i16 = 0;
        loop {
            let byte = self.byte()?;
            if byte == 0 {
                return Ok(());
            }
            let kind = byte & 0x0f;
            id = match byte >> 4 {
                0 => i16::try_from(self.zigzag()?).map_err(|_| invalid("a field id"))?,
                delta => id.wrapping_add(i16::from(delta)),
            };
            if !each(self, id, kind)? {
                self.skip(kind, depth + 1)?;
            }
        }
    }

    fn skip(&mut self, kind: u8, depth: usize) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid("values nested too deep"));
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.byte().map(drop),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.input.skip(8),
            BINARY => {
                let length = self.varint()?;
                self.input.skip(length)
            }
            LIST | SET => {
                let header = self.byte()?;
                let element = header & 0x0f;
                let size = match header >> 4 {
                    15 => self.varint()?,
                    size => u64::from(size),
                };
                for _ in 0..size {
                    self.element(element, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let size = self.varint()?;
                if size > 0 {
                    let types = self.byte()?;
                    for _ in 0..size {
                        self.element(types >> 4, depth + 1)?;
                        self.element(types & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            STRUCT => self.fields(depth, |_, _, _| Ok(false)),
            other => Err(invalid(&format!("unknown Thrift type {other}"))),
        }
    }

    /// A list, set or map element: booleans take a byte there.
    fn element(&mut self, kind: u8, depth: usize) -> std::io::Result<()> {
        match kind {
            BOOL_TRUE | BOOL_FALSE => self.byte().map(drop),
            kind => self.skip(kind, depth),
        }
    }

    /// The page header at `offset`; afterwards the position is the page's first payload byte.
    fn page_header(&mut self, offset: u64) -> std::io::Result<PageHeader> {
        let header = self.read_page_header(offset);
        if header.is_err() {
            // Where a failed read left the input is unknown: the next read seeks.
            self.input.lose_position();
        }
        header
    }

    fn read_page_header(&mut self, offset: u64) -> std::io::Result<PageHeader> {
        self.input.seek_to(offset)?;
        let mut header = PageHeader {
            kind: PageKind::Other,
            compressed: 0,
            uncompressed: 0,
            rows: 0,
        };
        self.fields(0, |input, id, kind| {
            match (id, kind) {
                (1, I32) => {
                    header.kind = match input.zigzag()? {
                        0 => PageKind::Data,
                        2 => PageKind::Dictionary,
                        3 => PageKind::Data,
                        _ => PageKind::Other,
                    }
                }
                (2, I32) => header.uncompressed = input.count()?,
                (3, I32) => header.compressed = input.count()?,
                // DataPageHeader: its first field is the value count.
                (5, STRUCT) => input.fields(1, |input, id, kind| match (id, kind) {
                    (1, I32) => {
                        header.rows = input.count()?;
                        Ok(true)
                    }
                    _ => Ok(false),
                })?,
                // DataPageHeaderV2: field 3 is the row count.
                (8, STRUCT) => input.fields(1, |input, id, kind| match (id, kind) {
                    (3, I32) => {
                        header.rows = input.count()?;
                        Ok(true)
                    }
                    _ => Ok(false),
                })?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(header)
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> std::io::Result<PageHeader> {
        Compact::new(std::io::Cursor::new(bytes.to_vec())).page_header(0)
    }

    #[test]
    fn a_data_page_header_gives_its_sizes_and_rows() {
        // type=DATA_PAGE(0), uncompressed=300, compressed=200,
        // data_page_header{num_values=7, encoding=0}, then stop.
        let bytes = [
            0x15, 0x00, // field 1, i32, zigzag(0)
            0x15, 0xd8, 0x04, // field 2, i32, zigzag(300) = 600
            0x15, 0x90, 0x03, // field 3, i32, zigzag(200) = 400
            0x2c, // field 5 (delta 2), struct
            0x15, 0x0e, // field 1, i32, zigzag(7) = 14
            0x15, 0x00, // field 2, i32, 0
            0x00, // end of DataPageHeader
            0x00, // end of PageHeader
        ];
        let page = header(&bytes).expect("a header");
        assert_eq!(page.kind, PageKind::Data);
        assert_eq!(
            (page.uncompressed, page.compressed, page.rows),
            (300, 200, 7)
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_hostile_ones_refused() {
        // type=DICTIONARY_PAGE(2), a binary field 4 (skipped), uncompressed=5, compressed=5.
        // Field 4 comes after field 1 as a delta of 3, field 2 by its absolute id, field 3 as a
        // delta of 1 from it.
        let bytes = [
            0x15, 0x04, // field 1, i32, zigzag(2)
            0x38, 0x02, b'h', b'i', // field 4, binary of 2 bytes
            0x05, 0x04, 0x0a, // field 2 (id zigzag 4), i32, zigzag(5)
            0x15, 0x0a, // field 3, i32, zigzag(5)
            0x00,
        ];
        let page = header(&bytes).expect("a header");
        assert_eq!(page.kind, PageKind::Dictionary);
        assert_eq!(page.uncompressed, 5);
        // Structs nested past the limit: refused, not recursed into.
        let mut deep = vec![0x1c; MAX_DEPTH + 4];
        deep.extend(vec![0x00; MAX_DEPTH + 4]);
        assert!(header(&deep).is_err());
        // A negative size.
        assert!(header(&[0x15, 0x00, 0x15, 0x01, 0x00]).is_err());
        // Cut short.
        assert!(header(&[0x15]).is_err());
    }

    #[test]
    fn adjacent_ranges_merge() {
        let range = |rows: Range<u64>, page_bytes| OversizedRows { rows, page_bytes };
        assert_eq!(
            merged(vec![range(0..2, 5), range(2..4, 9), range(6..7, 3)]),
            vec![range(0..4, 9), range(6..7, 3)]
        );
    }
}
