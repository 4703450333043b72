//! Text that goes into a log line or a one-line error.

use std::borrow::Cow;

/// `text` with control characters escaped (`\n` as the two characters `\` `n`), so that
/// text from outside (a Withings error message, a quoted YAML key) cannot break a one-line
/// message or forge a second log line.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(one_line("plain text, é"), Cow::Borrowed(_)));
        assert_eq!(one_line("a\r\nb\tc\u{7}"), "a\\r\\nb\\tc\\u{7}");
    }
}
