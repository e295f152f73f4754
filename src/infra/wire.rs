//! Untrusted binary formats read a byte at a time: a reader that knows its position, decodes
//! LEB128 varints (protobuf's and Thrift compact's integers alike) and skips by seeking, so a
//! payload nobody asked for is never read. The ONNX graph scan (`inference::graph`, protobuf)
//! and the Parquet page-header scan (`files`, Thrift compact) each put their own grammar on it.

use std::io::{self, Read, Seek, SeekFrom};

/// A reader over `R` that counts the bytes it has moved past.
pub struct ByteReader<R> {
    inner: R,
    position: u64,
}

impl<R: Read + Seek> ByteReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, position: 0 }
    }

    /// Bytes from the start: where the next read begins.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to `offset` from the start (no seek when already there).
    pub fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        if offset != self.position {
            self.inner.seek(SeekFrom::Start(offset))?;
            self.position = offset;
        }
        Ok(())
    }

    /// Forgets where the input is, after a read failed part-way: the next `seek_to` seeks.
    pub fn lose_position(&mut self) {
        self.position = u64::MAX;
    }

    pub fn byte(&mut self) -> io::Result<u8> {
        let mut one = [0u8; 1];
        self.inner.read_exact(&mut one)?;
        self.position += 1;
        Ok(one[0])
    }

    /// `len` bytes, read whole: for short values the caller has bounded.
    pub fn bytes(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        self.inner.read_exact(&mut bytes)?;
        self.position += len as u64;
        Ok(bytes)
    }

    /// An unsigned LEB128 varint, at most ten bytes.
    pub fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("varint longer than 10 bytes"))
    }

    /// Moves past `len` bytes without reading them.
    pub fn skip(&mut self, len: u64) -> io::Result<()> {
        let target = self
            .position
            .checked_add(len)
            .ok_or_else(|| invalid("length out of range"))?;
        let offset = i64::try_from(len).map_err(|_| invalid("length out of range"))?;
        self.inner.seek(SeekFrom::Current(offset))?;
        self.position = target;
        Ok(())
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_positions_and_skips() {
        let mut reader = ByteReader::new(io::Cursor::new(vec![0xd8, 0x04, 9, 9, 9, 7]));
        assert_eq!(reader.varint().expect("600"), 600);
        assert_eq!(reader.position(), 2);
        reader.skip(3).expect("skip");
        assert_eq!(reader.byte().expect("7"), 7);
        assert!(reader.byte().is_err(), "past the end");
        let mut long = ByteReader::new(io::Cursor::new(vec![0x80; 11]));
        assert!(long.varint().is_err(), "eleven bytes");
        assert!(ByteReader::new(io::Cursor::new(vec![0u8]))
            .skip(u64::MAX)
            .is_err());
    }
}
