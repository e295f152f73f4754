//! Input echoed back in an error message, cut short. An error names what was wrong with a
//! request, but a client's value can be megabytes: echoing it whole would turn a 1 MiB field into
//! a 1 MB error body (and over gRPC, a status message no client can read).

/// Characters of an echoed value kept in an error message.
pub const EXCERPT_CHARS: usize = 64;

/// `value` quoted as Rust's `{:?}` writes it if it is short; else its first
/// [`EXCERPT_CHARS`] characters, quoted, with `…` and its full length in characters.
pub fn excerpt(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(EXCERPT_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}… ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// Characters of a whole message (a parser's error, which may quote the input) kept whole.
pub const MESSAGE_CHARS: usize = 160;

/// A message that may quote input (a JSON parser's "invalid type: string \"…\""), cut to
/// [`MESSAGE_CHARS`]: its start and its end, where parsers say the line and column.
pub fn bounded_message(message: &str) -> String {
    let count = message.chars().count();
    if count <= MESSAGE_CHARS {
        return message.to_string();
    }
    let head: String = message.chars().take(MESSAGE_CHARS - 64).collect();
    // The end names the place (line and column); a quoted value there is cut by the head's limit.
    let tail: String = message.chars().skip(count - 40).collect();
    format!("{head} … ({count} characters) … {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(excerpt("FP32"), "\"FP32\"");
        assert_eq!(excerpt(&"a".repeat(64)), format!("\"{}\"", "a".repeat(64)));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary_with_their_length() {
        let long = "가".repeat(1 << 20);
        let cut = excerpt(&long);
        assert_eq!(
            cut,
            format!("\"{}\"… (1048576 characters)", "가".repeat(64))
        );
        assert!(cut.len() < 256);
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        let message = format!(
            "invalid type: string \"{}\", at line 1 column 9",
            "x".repeat(5000)
        );
        let cut = bounded_message(&message);
        assert!(cut.starts_with("invalid type: string \"xxx"));
        assert!(cut.ends_with("at line 1 column 9"));
        assert!(cut.chars().count() < MESSAGE_CHARS + 40, "{cut}");
        assert!(cut.matches('x').count() <= 100, "{cut}");
        assert_eq!(bounded_message("short"), "short");
    }
}
