//! The fuzz targets' properties on stable: every committed seed (`fuzz/seeds/<target>/`) and
//! every input the fuzzer ever crashed on (`tests/fuzz_regressions/<target>/`) goes through
//! the same check the fuzz target runs (`fuzz/checks.rs`). See FUZZING.md.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on every file of the target's seed and regression directories; a failure
/// names the file.
fn run_all(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fuzz_regressions").join(target),
    ] {
        if !dir.exists() {
            continue;
        }
        for (path, bytes) in inputs(&dir) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn getmeas_seeds_and_past_crashes_hold_the_properties() {
    run_all("getmeas", checks::getmeas);
}

#[test]
fn token_response_seeds_and_past_crashes_hold_the_properties() {
    run_all("token_response", checks::token_response);
}

#[test]
fn token_file_seeds_and_past_crashes_hold_the_properties() {
    run_all("token_file", checks::token_file);
}

#[test]
fn web_config_seeds_and_past_crashes_hold_the_properties() {
    run_all("web_config", checks::web_config);
}

/// The checks must be able to fail, or the fuzzer finds nothing: a known-bad exposition is
/// refused by the line parser.
#[test]
fn the_exposition_check_refuses_malformed_lines() {
    for bad in [
        "withings_x{a=\"1\"} \n",
        "withings_x{a=\"1} 1\n",
        "withings_x{a=\"\\t\"} 1\n",
        "1withings 1\n",
        "withings_x 1",
        "# WHAT withings_x\n",
    ] {
        let text = bad.to_owned();
        assert!(
            std::panic::catch_unwind(move || checks::check_exposition(&text)).is_err(),
            "{bad:?} was accepted"
        );
    }
    let good = "# HELP a_b x\n# TYPE a_b gauge\na_b{k=\"v\\\"\\n\\\\\",l=\"\"} 1.5\na_b 2\n";
    assert_eq!(checks::check_exposition(good).len(), 2);
}

/// The echo check flags a message built from a token field's value, even in an input that is
/// not JSON, and only then.
#[test]
fn the_echo_check_catches_an_echo() {
    let data =
        br#"{"status":0,"body":{"refresh_token" : "sekrit-value-1\"23","access_token":"short"#;
    let spans = checks::field_value_spans(data, &["access_token", "refresh_token"]);
    assert_eq!(spans.len(), 2);
    assert_eq!(&data[spans[0].clone()], b"short");
    assert_eq!(&data[spans[1].clone()], br#"sekrit-value-1\"23"#);
    let echo = |d: &[u8]| Some(String::from_utf8_lossy(d).into_owned());
    assert!(
        std::panic::catch_unwind(|| checks::assert_not_echoed("echo", data, &spans, echo)).is_err()
    );
    let fixed = |_: &[u8]| Some("error at line 1 column 2".to_owned());
    checks::assert_not_echoed("fixed", data, &spans, fixed);
}

fn regression(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `expires_at` near i64::MAX with a negative `obtained_at` overflowed the lifetime
/// (a panic in debug builds); the pair is now due a normal margin before it expires.
#[test]
fn a_huge_token_lifetime_does_not_overflow_the_refresh_margin() {
    use withings_exporter::account::token_store::StoredTokens;
    let tokens = StoredTokens::parse(&regression("token_file", "lifetime-overflow.json"))
        .expect("a valid token file");
    assert_eq!(
        (tokens.expires_at, tokens.obtained_at),
        (i64::MAX, Some(-1))
    );
    assert!(!tokens.refresh_due(1_700_000_000, 3_600));
    assert!(!tokens.refresh_due(i64::MAX - 3_601, 3_600));
    assert!(tokens.refresh_due(i64::MAX - 3_600, 3_600));
}

/// Withings' `error` text went into the message, and the log line, as it came: a newline in
/// it split the line (or forged a second one). It is now escaped onto one line.
#[test]
fn withings_error_text_with_line_breaks_stays_on_one_line() {
    use withings_exporter::collector::measures::model::parse_getmeas;
    use withings_exporter::withings::{ApiError, parse_token};
    let err = parse_token(&regression("token_response", "newline-in-error-text.json"))
        .expect_err("status 601");
    assert!(
        matches!(&err, ApiError::Status { status: 601, message, wait_seconds: None, .. }
            if message == "Too many\\nrequests"),
        "{err:?}"
    );
    let err = parse_getmeas(&regression("getmeas", "newline-in-error-text.json"))
        .expect_err("status 401");
    assert!(err.is_auth_failure(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Withings answered status 401 (authentication failed): invalid_token\\r\\nlevel=info msg=forged"
    );
}

/// A YAML key may hold any character when quoted; the error that names it was printed raw
/// and spanned lines. Control characters are now escaped and the message is one line.
#[test]
fn web_config_errors_naming_odd_keys_stay_on_one_line() {
    use withings_exporter::http::web_config::WebSecurity;
    let load = |name| {
        WebSecurity::from_bytes(
            Path::new("/etc/withings/web.yml"),
            &regression("web_config", name),
        )
        .expect_err("refused")
        .to_string()
    };
    assert_eq!(
        load("newline-in-user-name.yml"),
        "/etc/withings/web.yml: basic_auth_users.a\\nb: not a bcrypt hash (Invalid hash: the hash format is malformed; expected 60 ASCII bytes); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
    );
    let message = load("carriage-return-in-key.yml");
    assert!(
        message.starts_with(
            "/etc/withings/web.yml: not a valid web configuration (unknown field `tls\\rx`"
        ),
        "{message}"
    );
}

/// The web_config check's two false alarms (issue 14): a user name, and an unknown key, that
/// quote a hash's text. Their errors name that text as the input wrote it, which is no echo of
/// the hash; the check now masks the hashes in the parsed document, not in the raw bytes.
#[test]
fn the_web_config_echo_check_tells_a_quoted_name_from_an_echoed_hash() {
    use withings_exporter::http::web_config::WebSecurity;
    const HASH: &str = "$2b$04$TQnfOOFQR.UhSlFxM5sjQeGXo4xnXGJOVK4zORNxnLKlGOp1Ko5.m";
    for name in [
        "check-user-name-quotes-a-hash.yml",
        "check-unknown-key-quotes-a-hash.yml",
    ] {
        let data = regression("web_config", name);
        let message = WebSecurity::from_bytes(Path::new(checks::WEB_CONFIG_PATH), &data)
            .expect_err("refused")
            .to_string();
        // The name or key is quoted, and with it the hash's text: that is what the old,
        // byte-masking check mistook for an echo.
        assert!(message.contains(HASH), "{name}: {message}");
        checks::web_config(&data);
    }
}

/// libFuzzer's one finding in the 10-minute runs (a timeout, issue 14): a file with a cost-19
/// hash took over 10 s to load, because the load hashed a dummy password at the highest cost
/// in the file for the checks of unknown users; at cost 31 a start or a SIGHUP reload would
/// take days. The load now computes no bcrypt (unknown users are checked against the
/// costliest real hash), so a cost-31 file loads at once: with the old load this test would
/// not finish.
#[test]
fn a_costly_hash_costs_nothing_at_load() {
    use withings_exporter::http::web_config::WebSecurity;
    let path = Path::new(checks::WEB_CONFIG_PATH);
    let found = regression("web_config", "cost-19-hash-at-load.yml");
    // The fuzzer's file also has a TLS section without a key: refused for that.
    let message = WebSecurity::from_bytes(path, &found)
        .expect_err("no key_file")
        .to_string();
    assert!(message.contains("tls_server_config.key_file"), "{message}");
    let cost_31 = b"basic_auth_users:\n  prometheus: $2b$31$TQnfOOFQR.UhSlFxM5sjQeGXo4xnXGJOVK4zORNxnLKlGOp1Ko5.m\n";
    // On a thread with a deadline, so that a load that hashes again fails the test instead
    // of hanging it. The deadline is not a timing claim: a cost-31 bcrypt takes days.
    let (sent, loaded) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(WebSecurity::from_bytes(
            Path::new(checks::WEB_CONFIG_PATH),
            cost_31,
        ));
    });
    let security = loaded
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a cost-31 file loads without hashing")
        .expect("a valid file");
    let warning = security.cost_warning().expect("a cost warning");
    assert!(warning.contains("prometheus (cost 31)"), "{warning}");
}
