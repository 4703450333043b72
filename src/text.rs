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

/// `text` on one line (see [`one_line`]) and at most `max_chars` characters of it, with
/// `…[cut]` after when there was more: for text from outside echoed back (a bad account
/// name in a 400 may be 64 KB long).
pub fn cut(text: &str, max_chars: usize) -> String {
    let shown: String = text.chars().take(max_chars).collect();
    let mut out = one_line(&shown).into_owned();
    if shown.len() < text.len() {
        out.push_str("…[cut]");
    }
    out
}

/// The field a serde_json error says is missing, when it is one of `known`. serde_json's
/// messages may quote a value from the input, so errors about secrets are reported by kind
/// and position only; a missing field is named from our own list, never from the message.
pub fn missing_field(e: &serde_json::Error, known: &[&'static str]) -> Option<&'static str> {
    let message = e.to_string();
    let name = message.strip_prefix("missing field `")?.split('`').next()?;
    known.iter().copied().find(|k| *k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(one_line("plain text, é"), Cow::Borrowed(_)));
        assert_eq!(one_line("a\r\nb\tc\u{7}"), "a\\r\\nb\\tc\\u{7}");
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        assert_eq!(cut("short", 64), "short");
        let long = "é".repeat(70_000);
        let shown = cut(&long, 64);
        assert_eq!(shown, format!("{}…[cut]", "é".repeat(64)));
        assert_eq!(cut("a\nb", 64), "a\\nb");
    }

    #[test]
    fn a_missing_field_is_named_only_from_the_known_list() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Pair {
            access_token: String,
            refresh_token: String,
        }
        let e = serde_json::from_str::<Pair>("{}").unwrap_err();
        assert_eq!(missing_field(&e, &["access_token"]), Some("access_token"));
        assert_eq!(missing_field(&e, &["refresh_token"]), None);
        let e = serde_json::from_str::<Pair>(r#"{"access_token":7}"#).unwrap_err();
        assert_eq!(missing_field(&e, &["access_token", "refresh_token"]), None);
    }
}
