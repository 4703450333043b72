//! What each fuzz target asserts about one input. Shared, by `#[path]`, between the fuzz
//! targets (nightly libFuzzer builds) and `tests/it/fuzz_regressions.rs` (stable `cargo test`),
//! so the properties the fuzzer checked are the ones every seed and every past crash are
//! checked against in CI. A violated property panics: that is how libFuzzer sees a finding.

#![allow(dead_code)]

use std::path::Path;
use withings_exporter::account::token_store::StoredTokens;
use withings_exporter::collector::measures::families::{TIMESTAMP_METRIC, vital_families};
use withings_exporter::collector::measures::model::parse_getmeas;
use withings_exporter::collector::measures::state::{LatestState, MergeOptions};
use withings_exporter::collector::measures::table::MEASURES;
use withings_exporter::http::web_config::WebSecurity;
use withings_exporter::render::families;
use withings_exporter::withings::{self, ApiError};

/// Where `data` holds the string values of the JSON fields `keys`: the bytes between the
/// quotes after `"key":`, up to the closing quote or the end of a truncated input. Found in
/// the raw bytes, so that a value is found even when the rest of the input is not JSON.
pub fn field_value_spans(data: &[u8], keys: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    for key in keys {
        let pattern = format!("\"{key}\"");
        let pattern = pattern.as_bytes();
        let mut from = 0;
        while let Some(found) = data[from..]
            .windows(pattern.len())
            .position(|w| w == pattern)
        {
            let mut i = from + found + pattern.len();
            from = i;
            while data.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            if data.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            while data.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            if data.get(i) != Some(&b'"') {
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while end < data.len() && data[end] != b'"' {
                end += if data[end] == b'\\' { 2 } else { 1 };
            }
            spans.push(start..end.min(data.len()));
        }
    }
    spans
}

/// Secrets are never echoed: the error message for `data` is compared with the one for the
/// same input whose secret bytes (`spans`) are overwritten with a marker. A message that
/// then shows the marker was built from the secret. Comparing two runs, instead of looking
/// for the secret in the message, does not mistake a secret that happens to read like the
/// message's own words ("error at line 1") for an echo, which libFuzzer finds in seconds.
pub fn assert_not_echoed(
    what: &str,
    data: &[u8],
    spans: &[std::ops::Range<usize>],
    message_of: impl Fn(&[u8]) -> Option<String>,
) {
    const MARKER: u8 = b'~';
    const SHORTEST: usize = 8;
    let marker = [MARKER; SHORTEST];
    let marker = std::str::from_utf8(&marker).expect("ASCII");
    let spans: Vec<_> = spans.iter().filter(|r| r.len() >= SHORTEST).collect();
    if spans.is_empty() {
        return;
    }
    let original = message_of(data).unwrap_or_default();
    if original.contains(marker) {
        // The input itself brought the marker into the message; the test cannot tell.
        return;
    }
    let mut masked = data.to_vec();
    for span in spans {
        masked[span.clone()].fill(MARKER);
    }
    if let Some(message) = message_of(&masked) {
        assert!(
            !message.contains(marker),
            "{what} echoes a secret of the input: {message:?}"
        );
    }
}

fn assert_one_line(what: &str, message: &str) {
    assert!(
        !message.contains(['\n', '\r']),
        "{what} spans lines: {message:?}"
    );
}

/// `getmeas` answer → parse → merge (with and without ambiguous groups) → exposition text.
pub fn getmeas(data: &[u8]) {
    let page = match parse_getmeas(data) {
        Ok(page) => page,
        Err(e) => {
            assert_one_line("getmeas error", &e.to_string());
            return;
        }
    };
    for include_ambiguous in [false, true] {
        let mut state = LatestState::default();
        let stats = state.merge(&page.groups, MergeOptions { include_ambiguous });
        assert_eq!(stats.groups, page.groups.len());
        let skipped = stats.skipped_inconclusive
            + stats.skipped_ambiguous
            + stats.skipped_not_real
            + stats.skipped_out_of_range
            + stats.skipped_implausible
            + stats.skipped_future
            + stats.skipped_unknown_position;
        let measures: usize = page.groups.iter().map(|g| g.measures.len()).sum();
        assert!(skipped <= stats.groups + measures, "{stats:?}");
        assert!(stats.updated <= measures, "{stats:?}");

        let mut readings = 0;
        for (slot, reading) in state.readings() {
            let def = &MEASURES[slot.index];
            readings += 1;
            assert!(reading.value.is_finite(), "{}: {reading:?}", def.metric);
            assert!(
                withings_exporter::collector::measures::table::is_plausible(def, reading.value),
                "{}: {reading:?}",
                def.metric
            );
            assert!(reading.date >= 0, "{}: {reading:?}", def.metric);
            // A reading comes from a group of this page that the options let through.
            assert!(
                page.groups.iter().any(|g| g.grpid == reading.grpid
                    && g.date == reading.date
                    && !g.is_inconclusive
                    && (include_ambiguous || g.attrib != Some(1))),
                "{}: {reading:?} is from no admissible group",
                def.metric
            );
        }

        let text = families::encode(vital_families(&state));
        let samples = check_exposition(&text);
        // One vital sample and one timestamp sample per reading.
        assert_eq!(samples.len(), 2 * readings, "{text}");
        for (name, labels, value) in &samples {
            assert!(value.is_finite(), "{name}{{{labels}}} {value}");
            if name == TIMESTAMP_METRIC {
                assert!(*value >= 0.0, "{name}{{{labels}}} {value}");
            }
        }
        // Values survive the text format exactly.
        for (_, reading) in state.readings() {
            assert!(
                samples.iter().any(|(_, _, v)| *v == reading.value),
                "{} is not in {text}",
                reading.value
            );
        }
    }
}

/// Parses the text exposition line by line: `# HELP name text`, `# TYPE name type`, or
/// `name{label="value",...} number`. Returns the samples as (name, raw labels, value).
pub fn check_exposition(text: &str) -> Vec<(String, String, f64)> {
    let mut samples = Vec::new();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(keyword == "HELP" || keyword == "TYPE", "{line:?}");
            let name = rest.split(' ').next().unwrap_or("");
            assert!(is_metric_name(name), "{line:?}");
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "{line:?}");
        let mut rest = &line[name_end..];
        let mut labels = "";
        if rest.starts_with('{') {
            let end = labels_end(rest).unwrap_or_else(|| panic!("bad labels: {line:?}"));
            labels = &rest[1..end];
            rest = &rest[end + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value is not a number: {line:?}")),
        };
        samples.push((name.to_owned(), labels.to_owned(), value));
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Index of the `}` closing a `{label="value",...}` block starting at 0, checking each pair
/// and each escape (`\\`, `\"`, `\n` are the only ones the format has).
fn labels_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    if bytes.get(i) == Some(&b'}') {
        return Some(i);
    }
    loop {
        let start = i;
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            i += 1;
        }
        if i == start || bytes.get(i) != Some(&b'=') || bytes.get(i + 1) != Some(&b'"') {
            return None;
        }
        i += 2;
        loop {
            match bytes.get(i)? {
                b'\\' => {
                    if !matches!(bytes.get(i + 1)?, b'\\' | b'"' | b'n') {
                        return None;
                    }
                    i += 2;
                }
                b'"' => break,
                b'\n' => return None,
                _ => i += 1,
            }
        }
        i += 1;
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i),
            _ => return None,
        }
    }
}

/// `requesttoken` answer → parse: tokens never in Debug output nor in an error message.
pub fn token_response(data: &[u8]) {
    match withings::parse_token(data) {
        Ok(body) => {
            // A pair that cannot work must never reach the token file.
            assert!(!body.access_token.is_empty() && !body.refresh_token.is_empty());
            assert!(body.expires_in > 0, "expires_in {}", body.expires_in);
            let shown = format!("{body:?}");
            let visible = format!("{:?} {:?}", body.userid, body.scope);
            for token in [&body.access_token, &body.refresh_token] {
                let token = token.expose();
                // Debug shows userid and scope on purpose; a token equal to one is no leak.
                if token.len() >= 8 && !visible.contains(token) {
                    assert!(!shown.contains(token), "Debug shows a token: {shown}");
                }
            }
        }
        Err(e) => {
            assert_one_line("requesttoken error", &e.to_string());
            assert!(
                matches!(
                    e,
                    ApiError::Status { .. } | ApiError::InvalidResponse { .. }
                ),
                "parsing gave a non-parse error: {e:?}"
            );
            // Withings' own `error` text is reported as it came (it is the only explanation
            // there is); the token fields' values never are, not even inside an `error`
            // that is not text (`{"error":{"refresh_token":"..."}}`).
            assert_not_echoed(
                "requesttoken error",
                data,
                &field_value_spans(data, TOKEN_FIELDS),
                |d| withings::parse_token(d).err().map(|e| e.to_string()),
            );
        }
    }
}

const TOKEN_FIELDS: &[&str] = &["access_token", "refresh_token"];

/// Token file content → parse → what the token manager does with a loaded pair.
pub fn token_file(data: &[u8]) {
    let tokens = match StoredTokens::parse(data) {
        Ok(tokens) => tokens,
        Err(e) => {
            assert_one_line("token file error", &e.to_string());
            assert_not_echoed(
                "token file error",
                data,
                &field_value_spans(data, TOKEN_FIELDS),
                |d| StoredTokens::parse(d).err().map(|e| e.to_string()),
            );
            return;
        }
    };
    assert!(!tokens.refresh_token.is_empty());

    let shown = format!("{tokens:?}");
    let visible = format!("{:?} {:?}", tokens.userid, tokens.scope);
    for token in [&tokens.access_token, &tokens.refresh_token] {
        let token = token.expose();
        if token.len() >= 8 && !visible.contains(token) {
            assert!(!shown.contains(token), "Debug shows a token: {shown}");
        }
    }

    // What is loaded can be saved (the save format) and loaded back unchanged.
    let saved = serde_json::to_vec_pretty(&tokens).expect("a loaded pair encodes");
    let reloaded = StoredTokens::parse(&saved).expect("a saved pair loads");
    assert!(reloaded == tokens, "round trip changed {tokens:?}");

    // Refresh timing: never panics, and once due, stays due as time goes on.
    let mut nows = vec![
        i64::MIN,
        -1,
        0,
        1_700_000_000,
        tokens.expires_at.saturating_sub(1),
        tokens.expires_at,
        tokens.expires_at.saturating_add(1),
        i64::MAX,
    ];
    if let Some(obtained) = tokens.obtained_at {
        nows.push(obtained);
    }
    nows.sort_unstable();
    for max_margin in [0, 3_600, i64::MAX] {
        let mut was_due = false;
        for &now in &nows {
            let due = tokens.refresh_due(now, max_margin);
            assert!(
                due || !was_due,
                "due before {now} but not at it ({tokens:?})"
            );
            if now >= tokens.expires_at {
                assert!(due, "expired at {now} but not due ({tokens:?})");
            }
            was_due = due;
        }
    }
}

/// Where the fuzzed web configuration pretends to live: nothing exists there, so every
/// certificate or key it names is missing and TLS cannot come up.
pub const WEB_CONFIG_PATH: &str = "/nonexistent/withings-exporter-fuzz/web.yml";

/// Web configuration YAML → the same checks as at start-up and on reload.
pub fn web_config(data: &[u8]) {
    match WebSecurity::from_bytes(Path::new(WEB_CONFIG_PATH), data) {
        Ok(security) => {
            assert!(
                security.tls.is_none(),
                "TLS came up without any certificate file"
            );
        }
        Err(e) => {
            assert_one_line("web config error", &e.to_string());
            // A bcrypt hash is a secret too (an offline guessing target). Exact, so that a
            // crash always means an echo: the hashes are replaced in the parsed document, not
            // in the raw bytes (where a user name or an unknown key may quote the same text),
            // by a marker of a character the document does not hold, and the document is
            // loaded again. A message showing the marker was built from a hash.
            assert_hashes_not_echoed(data);
        }
    }
}

/// See [`web_config`]: the masked-document check of the `basic_auth_users` hashes.
pub fn assert_hashes_not_echoed(data: &[u8]) {
    use serde_norway::Value;
    const SHORTEST: usize = 8;
    let Ok(mut document) = serde_norway::from_slice::<Value>(data) else {
        return;
    };
    let Ok(plain) = serde_norway::to_string(&document) else {
        return;
    };
    let Some(marker) = ['~', 'Q', '^', '%', '@', 'Z']
        .into_iter()
        .find(|c| !plain.contains(*c))
    else {
        return;
    };
    let mut masked_any = false;
    if let Some(Value::Mapping(users)) = document.get_mut("basic_auth_users") {
        for (_, hash) in users.iter_mut() {
            if let Value::String(text) = hash
                && text.chars().count() >= SHORTEST
            {
                *text = marker.to_string().repeat(text.chars().count());
                masked_any = true;
            }
        }
    }
    if !masked_any {
        return;
    }
    let Ok(masked) = serde_norway::to_string(&document) else {
        return;
    };
    let run = marker.to_string().repeat(SHORTEST);
    if let Err(e) = WebSecurity::from_bytes(Path::new(WEB_CONFIG_PATH), masked.as_bytes()) {
        let message = e.to_string();
        assert!(
            !message.contains(&run),
            "web config error echoes a basic_auth_users hash: {message:?}"
        );
    }
}
