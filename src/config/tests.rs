use super::*;
use std::time::Duration;

#[test]
fn the_connection_cap_has_a_default_and_refuses_nonsense() {
    let c = Config::from_vars(vars(&[])).unwrap();
    assert_eq!(c.server.max_connections, 512);
    let c = Config::from_vars(vars(&[("WITHINGS_WEB_MAX_CONNECTIONS", " 64 ")])).unwrap();
    assert_eq!(c.server.max_connections, 64);
    for bad in ["0", "-1", "many", "1e3", "2000000"] {
        let e = Config::from_vars(vars(&[("WITHINGS_WEB_MAX_CONNECTIONS", bad)])).unwrap_err();
        assert_eq!(e.variable, "WITHINGS_WEB_MAX_CONNECTIONS", "{bad}");
        assert!(e.to_string().contains("from 1 to"), "{e}");
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults() {
    let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", "t")])).unwrap();
    assert_eq!(c.server.listen_address.to_string(), DEFAULT_LISTEN_ADDRESS);
    assert_eq!(c.withings.api_url.as_str(), "https://wbsapi.withings.net/");
    // Every type of the measure table: `collector::check` says which (tested there).
    assert_eq!(c.collectors.meastypes, None);
    assert_eq!(c.collectors.names, None);
    assert!(c.collectors.include_ambiguous);
    assert_eq!(c.require_access_token().unwrap().expose(), "t");
    assert_eq!(c.withings.upstream_timeout, Duration::from_secs(20));
    assert_eq!(c.withings.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.withings.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    assert_eq!(c.accounts.min_fetch_interval, Duration::ZERO);
}

#[test]
fn a_token_with_a_control_character_is_refused_by_name_without_its_value() {
    for variable in ["WITHINGS_ACCESS_TOKEN", "WITHINGS_REFRESH_TOKEN"] {
        for bad in [
            "abc\u{1b}[31mdef-sekrit",
            "abc\ndef-sekrit",
            "abc\u{7f}-sekrit",
            "ab é-sekrit",
        ] {
            let err = Config::from_vars(vars(&[(variable, bad)])).unwrap_err();
            assert_eq!(err.variable, variable);
            let line = err.to_string();
            assert!(!line.contains("sekrit") && !line.contains('\n'), "{line:?}");
        }
    }
    // Surrounding whitespace (a trailing newline from `$(cat file)`) is not part of it.
    let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", " abc123\n")])).unwrap();
    assert_eq!(c.require_access_token().unwrap().expose(), "abc123");
}

#[test]
fn sync_settings() {
    let c = Config::from_vars(vars(&[
        ("WITHINGS_CONNECT_TIMEOUT_SECONDS", "1.5"),
        ("WITHINGS_MAX_RESPONSE_BYTES", "65536"),
        ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "30"),
    ]))
    .unwrap();
    assert_eq!(c.withings.connect_timeout, Duration::from_millis(1500));
    assert_eq!(c.withings.max_response_bytes, 65536);
    assert_eq!(c.accounts.min_fetch_interval, Duration::from_secs(30));
    let zero = Config::from_vars(vars(&[("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "0")])).unwrap();
    assert_eq!(zero.accounts.min_fetch_interval, Duration::ZERO);
    let summary = c.summary();
    assert!(
        summary.contains("min_fetch_interval_seconds=30")
            && summary.contains("max_response_bytes=65536"),
        "{summary}"
    );
}

#[test]
fn explicit_values() {
    let c = Config::from_vars(vars(&[
        ("WITHINGS_LISTEN_ADDRESS", ":8080"),
        ("WITHINGS_API_URL", "https://wbsapi.us.withingsmed.net"),
        ("WITHINGS_MEASTYPES", " 10, 9 ,10"),
        ("WITHINGS_INCLUDE_AMBIGUOUS", "false"),
        ("WITHINGS_TIMEOUT_SECONDS", "2.5"),
        ("UNRELATED", "x"),
    ]))
    .unwrap();
    assert_eq!(c.server.listen_address.to_string(), "0.0.0.0:8080");
    assert_eq!(c.collectors.meastypes, Some(vec![10, 9]));
    assert!(!c.collectors.include_ambiguous);
    assert_eq!(c.withings.upstream_timeout, Duration::from_millis(2500));
    assert!(c.accounts.access_token.is_none());
}

#[test]
fn each_bad_value_names_its_variable() {
    let cases = [
        ("WITHINGS_LISTEN_ADDRESS", "localhost"),
        ("WITHINGS_API_URL", "not a url"),
        ("WITHINGS_API_URL", "ftp://example.com"),
        ("WITHINGS_API_URL", "https://user:pw@example.com"),
        ("WITHINGS_MEASTYPES", "9,ten"),
        ("WITHINGS_INCLUDE_AMBIGUOUS", "maybe"),
        ("WITHINGS_TIMEOUT_SECONDS", "-1"),
        ("WITHINGS_TIMEOUT_SECONDS", "NaN"),
        ("WITHINGS_CONNECT_TIMEOUT_SECONDS", "0"),
        ("WITHINGS_MAX_RESPONSE_BYTES", "1MB"),
        ("WITHINGS_MAX_RESPONSE_BYTES", "100"),
        ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "-1"),
        ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "soon"),
    ];
    for (var, value) in cases {
        let err = Config::from_vars(vars(&[(var, value)])).unwrap_err();
        assert_eq!(err.variable, var, "{value}: {err}");
        let line = err.to_string();
        assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
    }
}

#[test]
fn missing_token_is_reported_with_what_to_do() {
    let c = Config::from_vars(vars(&[])).unwrap();
    let err = c.require_access_token().unwrap_err();
    assert_eq!(err.variable, "WITHINGS_ACCESS_TOKEN");
    assert!(err.to_string().contains("demo"));
}

#[test]
fn token_variables() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "file-secret-value\n").unwrap();
    let file_var = secret_file.display().to_string();
    let c = Config::from_vars(vars(&[
        ("WITHINGS_CLIENT_ID", "cid"),
        ("WITHINGS_CLIENT_SECRET_FILE", &file_var),
        ("WITHINGS_TOKEN_FILE", "/data/tokens.json"),
        ("WITHINGS_REFRESH_TOKEN", "refresh-value"),
    ]))
    .unwrap();
    let creds = c.client_credentials().unwrap().unwrap();
    assert_eq!(creds.client_secret.expose(), "file-secret-value");
    assert_eq!(c.withings.redirect_uri.as_str(), DEFAULT_REDIRECT_URI);
    assert_eq!(
        c.withings.account_url.as_str(),
        "https://account.withings.com/"
    );
    let shown = format!("{c:?} {}", c.summary());
    for secret in ["file-secret-value", "refresh-value"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(
        c.summary().contains("client_secret=<set>") && c.summary().contains("refresh_token=<set>")
    );

    let both = Config::from_vars(vars(&[
        ("WITHINGS_CLIENT_SECRET", "s"),
        ("WITHINGS_CLIENT_SECRET_FILE", &file_var),
    ]))
    .unwrap_err();
    assert_eq!(both.variable, "WITHINGS_CLIENT_SECRET_FILE");
    let missing = Config::from_vars(vars(&[(
        "WITHINGS_CLIENT_SECRET_FILE",
        "/nonexistent/secret",
    )]))
    .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/secret"),
        "{missing}"
    );
    let half = Config::from_vars(vars(&[("WITHINGS_CLIENT_ID", "cid")])).unwrap();
    assert_eq!(
        half.client_credentials().unwrap_err().variable,
        "WITHINGS_CLIENT_SECRET"
    );
    for (var, value) in [
        ("WITHINGS_REDIRECT_URI", "not a url"),
        ("WITHINGS_ACCOUNT_URL", "ftp://x"),
    ] {
        assert_eq!(
            Config::from_vars(vars(&[(var, value)]))
                .unwrap_err()
                .variable,
            var
        );
    }
}

#[test]
fn web_config_file_is_taken_as_a_path_and_summarised() {
    let c = Config::from_vars(vars(&[(
        "WITHINGS_WEB_CONFIG_FILE",
        "/etc/withings/web.yml",
    )]))
    .unwrap();
    assert_eq!(
        c.server.web_config_file.as_deref(),
        Some(std::path::Path::new("/etc/withings/web.yml"))
    );
    assert!(
        c.summary()
            .contains("web_config_file=/etc/withings/web.yml")
    );
    let unset = Config::from_vars(vars(&[("WITHINGS_WEB_CONFIG_FILE", " ")])).unwrap();
    assert!(unset.server.web_config_file.is_none());
    assert!(unset.summary().contains("web_config_file=<unset>"));
}

#[test]
fn secrets_stay_out_of_debug_and_summary() {
    let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", "very-secret-token")])).unwrap();
    for shown in [format!("{c:?}"), c.summary()] {
        assert!(!shown.contains("very-secret-token"), "{shown}");
    }
    assert!(c.summary().contains("access_token=<set>"));
}

#[test]
fn a_zero_timeout_is_refused_with_the_real_bounds() {
    let err = Config::from_vars(vars(&[("WITHINGS_TIMEOUT_SECONDS", "0")])).unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("more than 0 and at most 86400") && !line.contains("between 0"),
        "{line}"
    );
}

#[test]
fn a_host_name_in_the_listen_address_is_resolved() {
    let c = Config::from_vars(vars(&[("WITHINGS_LISTEN_ADDRESS", "localhost:19100")])).unwrap();
    assert!(
        c.server.listen_address.ip().is_loopback(),
        "{}",
        c.server.listen_address
    );
    assert_eq!(c.server.listen_address.port(), 19100);
    // No name that needs a DNS server: tests contact nothing beyond loopback.
    for bad in ["localhost", "localhost:port", ":x", "localhost:70000"] {
        let err = Config::from_vars(vars(&[("WITHINGS_LISTEN_ADDRESS", bad)])).unwrap_err();
        assert_eq!(err.variable, "WITHINGS_LISTEN_ADDRESS", "{bad}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn telemetry_path_and_log_settings() {
    let c = Config::from_vars(vars(&[])).unwrap();
    assert_eq!(c.server.telemetry_path, "/metrics");
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Logfmt);
    let c = Config::from_vars(vars(&[
        ("WITHINGS_TELEMETRY_PATH", "/withings/metrics"),
        ("WITHINGS_LOG_FORMAT", "JSON"),
        ("RUST_LOG", "debug"),
    ]))
    .unwrap();
    assert_eq!(c.server.telemetry_path, "/withings/metrics");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "debug");
    // WITHINGS_LOG_LEVEL wins over RUST_LOG.
    let c = Config::from_vars(vars(&[
        ("WITHINGS_LOG_LEVEL", "warn,withings_exporter=debug"),
        ("RUST_LOG", "trace"),
    ]))
    .unwrap();
    assert_eq!(c.log.level, "warn,withings_exporter=debug");
    for (var, value) in [
        ("WITHINGS_TELEMETRY_PATH", "metrics"),
        ("WITHINGS_TELEMETRY_PATH", "/"),
        ("WITHINGS_TELEMETRY_PATH", "/a b"),
        ("WITHINGS_TELEMETRY_PATH", "/-/healthy"),
        ("WITHINGS_LOG_FORMAT", "text"),
        ("WITHINGS_LOG_LEVEL", "infoo"),
        ("WITHINGS_LOG_LEVEL", "withings_exporter=loud"),
        ("RUST_LOG", "verbose"),
    ] {
        let err = Config::from_vars(vars(&[(var, value)])).unwrap_err();
        assert_eq!(err.variable, var, "{value}: {err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}

#[test]
fn flags_override_their_variables_before_validation() {
    let merged = with_overrides(
        vars(&[
            ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:1"),
            ("WITHINGS_API_URL", "http://127.0.0.1:2"),
        ]),
        [("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:3".to_owned())],
    );
    let c = Config::from_vars(merged).unwrap();
    assert_eq!(c.server.listen_address.to_string(), "127.0.0.1:3");
    assert_eq!(c.withings.api_url.as_str(), "http://127.0.0.1:2/");
    let bad = with_overrides(vars(&[]), [("WITHINGS_LISTEN_ADDRESS", "x".to_owned())]);
    assert_eq!(
        Config::from_vars(bad).unwrap_err().variable,
        "WITHINGS_LISTEN_ADDRESS"
    );
}

#[test]
fn only_our_variables_are_read_and_a_non_utf8_one_is_named_not_shown() {
    use std::os::unix::ffi::OsStringExt;
    let os = |s: &str| OsString::from(s);
    let garbage = || OsString::from_vec(b"se\xffcret-value".to_vec());
    let read = environment([
        (os("WITHINGS_API_URL"), os("http://x")),
        (os("RUST_LOG"), os("debug")),
        (os("UNRELATED"), garbage()),
        (OsString::from_vec(b"\xff".to_vec()), os("x")),
        (os("PATH"), os("/bin")),
    ])
    .unwrap();
    assert_eq!(
        read,
        vars(&[("WITHINGS_API_URL", "http://x"), ("RUST_LOG", "debug")])
    );
    let err = environment([(os("WITHINGS_CLIENT_SECRET"), garbage())]).unwrap_err();
    assert_eq!(
        err,
        EnvironmentError::NotUtf8("WITHINGS_CLIENT_SECRET".into())
    );
    let line = err.to_string();
    assert!(
        line.starts_with("WITHINGS_CLIENT_SECRET:") && !line.contains("cret-value"),
        "{line}"
    );
}

#[test]
fn a_misspelt_variable_gets_the_closest_name() {
    let warnings = misspelt_variables(&vars(&[
        ("WITHINGS_LISTEN_ADRESS", ":1"),
        ("WITHINGS_CLIENTID", "x"),
        ("WITHINGS_ACCESS_TOKEN", "t"),
        ("WITHINGS_TOKEN_DIR", "/d"),
        ("WITHINGS_WEB_MAX_CONNECTIONS", "10"),
        ("RUST_LOG", "info"),
    ]));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("WITHINGS_LISTEN_ADRESS ")
            && warnings[0].ends_with("did you mean WITHINGS_LISTEN_ADDRESS?"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].ends_with("did you mean WITHINGS_CLIENT_ID?"),
        "{warnings:?}"
    );
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let help = settings_help();
    for s in SETTINGS {
        assert!(help.contains(s.variable), "{}", s.variable);
        if !s.default.is_empty() {
            assert!(
                help.contains(&format!("[default: {}]", s.default)),
                "{}",
                s.variable
            );
        }
    }
    assert!(
        help.contains("WITHINGS_LISTEN_ADDRESS (--web.listen-address) [default: 0.0.0.0:19100]")
    );
}

#[test]
fn each_default_in_the_table_is_what_an_empty_environment_gets() {
    let empty = format!("{:?}", Config::from_vars(vars(&[])).unwrap());
    assert_eq!(empty, format!("{:?}", Config::default()));
    for s in SETTINGS {
        // These two name what the tables above this floor hold: `collector::check`.
        if s.default.is_empty()
            || ["WITHINGS_COLLECTORS", "WITHINGS_MEASTYPES"].contains(&s.variable)
        {
            continue;
        }
        let c = Config::from_vars(vars(&[(s.variable, s.default)])).unwrap();
        assert_eq!(format!("{c:?}"), empty, "{}", s.variable);
    }
}

#[test]
fn each_flag_stands_for_one_setting() {
    let flags: Vec<_> = settings::flags().collect();
    assert_eq!(flags.len(), 5);
    for (i, (s, f)) in flags.iter().enumerate() {
        assert!(flag_help(s.variable).contains(s.variable));
        assert!(flags[i + 1..].iter().all(|(_, g)| g.name != f.name));
    }
}

#[test]
fn variables_are_read_as_they_always_were() {
    // The part after WITHINGS_ in any case, the last one winning; blank is unset.
    let c = Config::from_vars(vars(&[
        ("WITHINGS_api_url", "http://127.0.0.1:1"),
        ("WITHINGS_TIMEOUT_SECONDS", "3"),
        ("WITHINGS_TIMEOUT_SECONDS", " "),
    ]))
    .unwrap();
    assert_eq!(c.withings.api_url.as_str(), "http://127.0.0.1:1/");
    assert_eq!(c.withings.upstream_timeout, DEFAULT_TIMEOUT);
    // The logging variables by their exact names only.
    let c = Config::from_vars(vars(&[("WITHINGS_log_format", "json")])).unwrap();
    assert_eq!(c.log.format, LogFormat::Logfmt);
    // The first bad value in the order they have always been checked stops the start.
    let err = Config::from_vars(vars(&[
        ("WITHINGS_SAFETY_POLL_SECONDS", "x"),
        ("WITHINGS_LISTEN_ADDRESS", "x"),
    ]))
    .unwrap_err();
    assert_eq!(err.variable, "WITHINGS_LISTEN_ADDRESS");
    let err = Config::from_vars(vars(&[
        ("WITHINGS_TOKEN_DIR", "/d"),
        ("WITHINGS_ACCESS_TOKEN", "bad\ntoken"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("pasted"), "{err}");
}

#[test]
fn routes_on_the_open_notification_path_are_refused() {
    let with = |telemetry: &str, callback: &str| {
        Config::from_vars(vars(&[
            ("WITHINGS_TELEMETRY_PATH", telemetry),
            ("WITHINGS_CALLBACK_URL", callback),
        ]))
    };
    // Bug 6: the metrics under the callback path were served without credentials.
    for telemetry in ["/withings/notify/metrics", "/withings/notify"] {
        let err = with(telemetry, "https://x.org/withings/notify/").unwrap_err();
        assert_eq!(err.variable, "WITHINGS_TELEMETRY_PATH", "{telemetry}");
        assert!(!err.to_string().contains('\n'));
    }
    for callback in [
        "https://x.org/probe",
        "https://x.org/-",
        "https://x.org/sd/",
    ] {
        let err = with("/metrics", callback).unwrap_err();
        assert_eq!(err.variable, "WITHINGS_CALLBACK_URL", "{callback}");
    }
    for telemetry in ["/probe", "/sd"] {
        let err = Config::from_vars(vars(&[("WITHINGS_TELEMETRY_PATH", telemetry)])).unwrap_err();
        assert_eq!(err.variable, "WITHINGS_TELEMETRY_PATH", "{telemetry}");
    }
    // Beside each other, or the notifications below the metrics: fine.
    for (telemetry, callback) in [
        ("/withings/notifyx", "https://x.org/withings/notify"),
        ("/withings", "https://x.org/withings/notify"),
        ("/metrics", "https://x.org/probex"),
    ] {
        assert!(with(telemetry, callback).is_ok(), "{telemetry} {callback}");
    }
}
