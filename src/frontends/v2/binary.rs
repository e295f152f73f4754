//! Tensors in bytes, as the Open Inference Protocol frames them: the binary tensor data
//! extension over HTTP (Triton's, `tritonclient.http`'s default) and the raw contents of gRPC.
//!
//! A request may carry `Inference-Header-Content-Length: N`: the first N bytes of the body are
//! the JSON inference header, the rest are the tensors' bytes, one after another in the order
//! of the inputs that say `"parameters": {"binary_data_size": M}`. A `BYTES` tensor is a run of
//! elements, each a 4-byte little-endian length and that many bytes. Answers go the same way
//! for outputs that ask for it. Pure: no HTTP types, every size checked against what is there
//! before it is used, so a hostile frame is an error, never a panic or an allocation the body
//! does not pay for.

use crate::infra::excerpt::excerpt;

/// Why a binary request could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("Inference-Header-Content-Length is {declared}, but the body has {body} bytes")]
    HeaderPastBody { declared: usize, body: usize },
    #[error("Inference-Header-Content-Length {} is not a byte count", excerpt(.0))]
    BadHeaderLength(String),
    #[error("input {input:?} declares binary_data_size {declared}, but only {left} bytes follow")]
    SizeOverrun {
        input: String,
        declared: u64,
        left: usize,
    },
    #[error("{0} bytes of binary data follow the last binary input")]
    Trailing(usize),
    #[error("element {index} of input {input:?}: {reason}")]
    Element {
        input: String,
        index: usize,
        reason: String,
    },
    #[error("input {input:?} holds more than {limit} elements")]
    TooManyElements { input: String, limit: usize },
}

/// Splits a body into its JSON header and binary tail.
pub fn split_body<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), FramingError> {
    let Some(declared) = header_length else {
        return Ok((body, &[]));
    };
    let declared: usize = declared
        .trim()
        .parse()
        .map_err(|_| FramingError::BadHeaderLength(declared.chars().take(40).collect()))?;
    if declared > body.len() {
        return Err(FramingError::HeaderPastBody {
            declared,
            body: body.len(),
        });
    }
    Ok(body.split_at(declared))
}

/// Reads the binary tail input by input.
pub struct Tail<'a> {
    rest: &'a [u8],
}

impl<'a> Tail<'a> {
    pub fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    /// The next `size` bytes, for `input`.
    pub fn take(&mut self, input: &str, size: u64) -> Result<&'a [u8], FramingError> {
        let overrun = || FramingError::SizeOverrun {
            input: input.to_string(),
            declared: size,
            left: self.rest.len(),
        };
        let size = usize::try_from(size).map_err(|_| overrun())?;
        if size > self.rest.len() {
            return Err(overrun());
        }
        let (taken, rest) = self.rest.split_at(size);
        self.rest = rest;
        Ok(taken)
    }

    /// Every byte must belong to an input.
    pub fn finish(self) -> Result<(), FramingError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(FramingError::Trailing(n)),
        }
    }
}

/// The strings of a serialized `BYTES` tensor, at most `limit` of them.
pub fn decode_strings(
    input: &str,
    mut bytes: &[u8],
    limit: usize,
) -> Result<Vec<String>, FramingError> {
    let mut strings = Vec::new();
    while !bytes.is_empty() {
        let index = strings.len();
        let element = |reason: String| FramingError::Element {
            input: input.to_string(),
            index,
            reason,
        };
        if index >= limit {
            return Err(FramingError::TooManyElements {
                input: input.to_string(),
                limit,
            });
        }
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(element(format!(
                "{} bytes left, too few for a 4-byte length",
                bytes.len()
            )));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if length > rest.len() {
            return Err(element(format!(
                "length {length} runs past the {} bytes left",
                rest.len()
            )));
        }
        let (text, rest) = rest.split_at(length);
        let text = std::str::from_utf8(text).map_err(|e| element(format!("not UTF-8: {e}")))?;
        strings.push(text.to_string());
        bytes = rest;
    }
    Ok(strings)
}

/// `BYTES` elements serialized: a 4-byte little-endian length before each.
pub fn encode_strings<'s>(strings: impl IntoIterator<Item = &'s str>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// `FP32` elements serialized, little-endian.
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_hostile_frames_are_errors() {
        let texts = ["The striker scored twice.", "삼성전자 주가", ""];
        let bytes = encode_strings(texts);
        assert_eq!(decode_strings("text", &bytes, 8).expect("decode"), texts);
        assert!(matches!(
            decode_strings("text", &bytes, 2),
            Err(FramingError::TooManyElements { limit: 2, .. })
        ));
        // A length that runs past the end, a length cut short, an overflowing length, not UTF-8.
        for hostile in [
            &[5, 0, 0, 0, b'a'][..],
            &[1, 0][..],
            &[0xff, 0xff, 0xff, 0xff, b'a'][..],
            &[2, 0, 0, 0, 0xc3, 0x28][..],
        ] {
            assert!(
                matches!(
                    decode_strings("text", hostile, 8),
                    Err(FramingError::Element { .. })
                ),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn the_header_and_the_tail_are_checked_against_the_body() {
        let body = b"{\"a\":1}tail";
        assert_eq!(
            split_body(body, Some("7")),
            Ok((&b"{\"a\":1}"[..], &b"tail"[..]))
        );
        assert_eq!(split_body(body, None), Ok((&body[..], &b""[..])));
        assert!(matches!(
            split_body(body, Some("12")),
            Err(FramingError::HeaderPastBody { .. })
        ));
        for bad in ["-1", "1e3", "18446744073709551616", ""] {
            assert!(
                matches!(
                    split_body(body, Some(bad)),
                    Err(FramingError::BadHeaderLength(_))
                ),
                "{bad}"
            );
        }
        let mut tail = Tail::new(b"abcdef");
        assert_eq!(tail.take("x", 2), Ok(&b"ab"[..]));
        assert!(matches!(
            tail.take("y", u64::MAX),
            Err(FramingError::SizeOverrun { .. })
        ));
        assert!(matches!(
            tail.take("y", 5),
            Err(FramingError::SizeOverrun { .. })
        ));
        assert_eq!(tail.take("y", 3), Ok(&b"cde"[..]));
        assert_eq!(tail.finish(), Err(FramingError::Trailing(1)));
    }

    #[test]
    fn floats_are_little_endian() {
        assert_eq!(encode_f32(&[1.0, -2.5]), [0, 0, 128, 63, 0, 0, 32, 192]);
    }
}
