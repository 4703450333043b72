//! The web configuration's unit tests, across its parts: most load a file and check what
//! the server would do with it.

use super::basic_auth::{
    AUTH_CACHE_CAPACITY, CheckLimiter, TRACKED_ADDRESSES, client_key, parse_basic,
};
use super::*;
use crate::secret::Secret;
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A self-signed server certificate and key, written as cert.pem and key.pem.
fn cert_files(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    write(dir, "cert.pem", &cert.pem());
    write(dir, "key.pem", &key.serialize_pem());
}

fn load_text(text: &str) -> (tempfile::TempDir, Result<WebSecurity, WebConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    let path = write(dir.path(), "web.yml", text);
    let loaded = WebSecurity::load(&path);
    (dir, loaded)
}

fn error_of(text: &str) -> WebConfigError {
    match load_text(text).1 {
        Ok(security) => panic!("accepted {text:?}: {security:?}"),
        Err(e) => e,
    }
}

#[test]
fn empty_file_and_empty_sections_configure_nothing() {
    for text in [
        "",
        "\n",
        "---\n",
        "tls_server_config: {}\nbasic_auth_users: {}\n",
    ] {
        let security = load_text(text).1.unwrap();
        assert!(security.tls.is_none(), "{text:?}");
        assert!(security.users.is_empty(), "{text:?}");
    }
}

#[test]
fn tls_configured_tells_the_scheme_without_loading() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", false),
        ("tls_server_config: {}\n", false),
        ("basic_auth_users: {}\n", false),
        // The certificate need not exist: only the scheme is asked for.
        (
            "tls_server_config:\n  cert_file: none.pem\n  key_file: none.pem\n",
            true,
        ),
    ];
    for (text, tls) in cases {
        let path = write(dir.path(), "web.yml", text);
        assert_eq!(tls_configured(&path), Ok(tls), "{text:?}");
    }
    let path = write(dir.path(), "web.yml", "tls_server_config: [\n");
    assert!(tls_configured(&path).is_err());
    assert!(tls_configured(&dir.path().join("absent.yml")).is_err());
}

#[test]
fn relative_certificate_paths_are_resolved_against_the_file() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let (_dir, loaded) = load_text(&format!(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\nbasic_auth_users:\n  alice: {hash}\n"
    ));
    let security = loaded.unwrap();
    let tls = security.tls.expect("TLS configured");
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert_eq!(security.users.len(), 1);
}

#[test]
fn each_invalid_file_names_the_file_and_the_key() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (
            "basic_auth_users: [unclosed\n".into(),
            None,
            "not a valid web configuration",
        ),
        (
            "basic_auth_user:\n  alice: x\n".into(),
            None,
            "unknown field",
        ),
        (
            "tls_server_config:\n  cert_fle: cert.pem\n".into(),
            None,
            "unknown field",
        ),
        (
            "basic_auth_users:\n  alice: not-a-hash\n".into(),
            Some("basic_auth_users.alice"),
            "not a bcrypt hash",
        ),
        (
            "basic_auth_users:\n  alice: 5f4dcc3b5aa765d61d8327deb882cf99\n".into(),
            Some("basic_auth_users.alice"),
            "not a bcrypt hash",
        ),
        (
            format!("basic_auth_users:\n  alice: {hash}\n  alice: {hash}\n"),
            None,
            "listed twice",
        ),
        (
            format!("basic_auth_users:\n  'a:b': {hash}\n"),
            Some("basic_auth_users.a:b"),
            "without ':'",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n".into(),
            Some("tls_server_config.cert_file"),
            "cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: missing.pem\n".into(),
            Some("tls_server_config.key_file"),
            "cannot read",
        ),
        (
            "tls_server_config:\n  key_file: key.pem\n".into(),
            Some("tls_server_config.cert_file"),
            "missing",
        ),
        (
            "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n".into(),
            Some("tls_server_config.cert_file"),
            "no PEM certificate",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n".into(),
            Some("tls_server_config.key_file"),
            "no usable PEM private key",
        ),
        (
            format!("{tls}  client_auth_type: RequireClientCert\n"),
            Some("tls_server_config.client_auth_type"),
            "RequireAndVerifyClientCert",
        ),
        (
            format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
            Some("tls_server_config.client_ca_file"),
            "missing",
        ),
        (
            format!("{tls}  client_ca_file: cert.pem\n"),
            Some("tls_server_config.client_ca_file"),
            "without a client_auth_type",
        ),
        (
            format!("{tls}  min_version: TLS11\n"),
            Some("tls_server_config.min_version"),
            "obsolete",
        ),
        (
            format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"),
            Some("tls_server_config.max_version"),
            "lower than min_version",
        ),
        (
            format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            Some("tls_server_config.cipher_suites"),
            "not supported",
        ),
        (
            "http_server_config:\n  http2: false\n".into(),
            Some("http_server_config"),
            "not supported",
        ),
    ];
    for (text, key, needle) in cases {
        let e = error_of(&text);
        assert!(e.file.ends_with("web.yml"), "{text:?}: {e}");
        assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
        let line = e.to_string();
        assert!(line.contains(needle), "{text:?}: {line}");
        assert!(line.contains("web.yml"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    let other = rcgen::KeyPair::generate().unwrap();
    write(dir.path(), "other.pem", &other.serialize_pem());
    let path = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: other.pem\n",
    );
    let e = WebSecurity::load(&path).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("tls_server_config.key_file"), "{e}");
    assert!(e.to_string().contains("does not go with"), "{e}");
}

#[test]
fn errors_never_quote_a_hash_or_a_key() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    // Truncated: parses as YAML, fails as bcrypt.
    let broken = &hash[..50];
    let e = error_of(&format!("basic_auth_users:\n  alice: {broken}\n"));
    assert!(!e.to_string().contains(broken), "{e}");
    let security = load_text(&format!("basic_auth_users:\n  alice: {hash}\n"))
        .1
        .unwrap();
    assert!(!format!("{security:?}").contains(&hash[7..]));
}

#[test]
fn basic_header_parsing() {
    use base64::Engine;
    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let header = format!("Basic {}", encode("alice:pa:ss"));
    assert_eq!(
        parse_basic(header.as_bytes()),
        Some((b"alice".to_vec(), b"pa:ss".to_vec()))
    );
    let lower = format!("basic {}", encode("bob:"));
    assert_eq!(
        parse_basic(lower.as_bytes()),
        Some((b"bob".to_vec(), Vec::new()))
    );
    for bad in [
        format!("Bearer {}", encode("alice:pw")),
        format!("Basic {}", encode("no-colon")),
        "Basic !!!not-base64".to_string(),
        "Basic".to_string(),
    ] {
        assert_eq!(parse_basic(bad.as_bytes()), None, "{bad}");
    }
}

fn header(user: &str, password: &str) -> Vec<u8> {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
    .into_bytes()
}

const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

async fn allows(auth: &BasicAuth, authorization: Option<&[u8]>) -> bool {
    auth.check(authorization, LOCAL).await == AuthOutcome::Allowed
}

fn address(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into()
}

fn one_user(password: &str, cost: u32) -> BasicAuth {
    let hash = bcrypt::hash(password, cost).unwrap();
    BasicAuth::new(Path::new("web.yml"), vec![("alice".into(), hash)]).unwrap()
}

/// Clients that hang up while their check runs: the checks that go on without them still
/// count against the limit, so the checks running at once never exceed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_clients_that_hang_up_still_run_one_at_a_time() {
    let auth = Arc::new(one_user("right", 8));
    for round in 0..6 {
        let attempts: Vec<_> = (0..16)
            .map(|i| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move {
                    let wrong = header("alice", &format!("wrong-{round}-{i}"));
                    // Hangs up long before a cost-8 check ends.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(1),
                        auth.check(Some(&wrong), address(round * 16 + i)),
                    )
                    .await;
                })
            })
            .collect();
        for attempt in attempts {
            attempt.await.unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while auth.check_stats().running > 0 {
        assert!(std::time::Instant::now() < deadline, "checks never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = auth.check_stats();
    assert!(stats.completed >= 1, "{stats:?}");
    assert!(stats.peak_running <= CONCURRENT_CHECKS, "{stats:?}");
    // The pending limit refused the rest at once rather than queueing them.
    assert!(stats.throttled >= 1, "{stats:?}");
    assert!(allows(&auth, Some(&header("alice", "right"))).await);
}

#[tokio::test]
async fn a_password_longer_than_bcrypt_reads_is_refused() {
    let real: String = "p".repeat(MAX_PASSWORD_BYTES);
    let auth = one_user(&real, 4);
    assert!(allows(&auth, Some(&header("alice", &real))).await);
    for suffix in ["x", "anything at all"] {
        let longer = format!("{real}{suffix}");
        // bcrypt alone would accept it: it reads 72 bytes.
        assert!(bcrypt::verify(&longer, auth.users["alice"].expose()).unwrap());
        assert!(
            !allows(&auth, Some(&header("alice", &longer))).await,
            "{suffix}"
        );
    }
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_without_a_check() {
    let auth = one_user("right", 4);
    let attacker = address(1);
    for i in 0..MAX_FAILURES_PER_ADDRESS {
        let wrong = header("alice", &format!("guess-{i}"));
        assert_eq!(
            auth.check(Some(&wrong), attacker).await,
            AuthOutcome::Denied
        );
    }
    let checked = auth.check_stats().completed;
    let right = header("alice", "right");
    // The right password not yet cached needs a bcrypt check: refused until the window ends.
    match auth.check(Some(&right), attacker).await {
        AuthOutcome::Throttled { retry_after } => {
            assert!(retry_after >= Duration::from_secs(1));
            assert!(retry_after <= FAILURE_WINDOW);
        }
        other => panic!("{other:?}"),
    }
    // Once cached (from another address), it costs nothing and gets in even from this one:
    // behind a proxy, a guesser must not lock Prometheus out.
    assert!(allows(&auth, Some(&right)).await);
    assert_eq!(
        auth.check(Some(&right), attacker).await,
        AuthOutcome::Allowed
    );
    // Guesses from the locked-out address are still refused without a check.
    assert!(matches!(
        auth.check(Some(&header("alice", "guess-x")), attacker)
            .await,
        AuthOutcome::Throttled { .. }
    ));
    assert_eq!(
        auth.check_stats().completed,
        checked + 1,
        "only LOCAL's check ran"
    );
    // Another address is not affected.
    assert!(auth.check(Some(&right), address(2)).await == AuthOutcome::Allowed);
}

#[test]
fn limits_apply_to_an_ipv4_address_or_an_ipv6_64() {
    let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(client_key(v6("2001:db8:1:2:3:4:5:6")), v6("2001:db8:1:2::"));
    assert_eq!(client_key(v6("::ffff:192.0.2.7")), v6("192.0.2.7"));
    assert_eq!(client_key(v6("192.0.2.7")), v6("192.0.2.7"));
}

#[test]
fn the_pending_checks_are_bounded_overall_and_per_address() {
    let limiter = Arc::new(CheckLimiter::new());
    let mine: Vec<_> = (0..MAX_PENDING_PER_ADDRESS)
        .map(|_| limiter.admit(address(0)).unwrap())
        .collect();
    assert!(limiter.admit(address(0)).is_none());
    let others: Vec<_> = (1..MAX_PENDING_CHECKS - MAX_PENDING_PER_ADDRESS + 1)
        .map(|i| limiter.admit(address(i)).unwrap())
        .collect();
    assert!(limiter.admit(address(99)).is_none());
    drop(others);
    drop(mine);
    assert!(limiter.admit(address(0)).is_some());
    let state = limiter.state.lock().unwrap();
    assert_eq!(state.pending, 0);
    assert!(state.pending_by_address.is_empty());
}

#[test]
fn the_failures_of_a_bounded_number_of_addresses_are_remembered() {
    let limiter = CheckLimiter::new();
    for i in 0..TRACKED_ADDRESSES * 2 {
        limiter.record_failure(address(i));
    }
    assert_eq!(
        limiter.state.lock().unwrap().failures.len(),
        TRACKED_ADDRESSES
    );
}

#[test]
fn costs_above_twelve_are_warned_about_once_per_load() {
    let cheap = bcrypt::hash("x", 4).unwrap();
    // A cost-13 hash without spending seconds making it: the dummy is hashed at 13 anyway.
    let dear = cheap.replacen("$04$", "$13$", 1);
    let auth = BasicAuth::new(
        Path::new("web.yml"),
        vec![("cheap".into(), cheap.clone()), ("dear".into(), dear)],
    )
    .unwrap();
    let warning = auth.cost_warning().expect("a warning");
    assert!(warning.contains("dear (cost 13)"), "{warning}");
    assert!(!warning.contains("cheap"), "{warning}");
    assert!(!warning.contains(&cheap[7..]), "{warning}");
    let twelve = BasicAuth::new(
        Path::new("web.yml"),
        vec![("u".into(), cheap.replacen("$04$", "$12$", 1))],
    )
    .unwrap();
    assert_eq!(twelve.cost_warning(), None);
}

#[tokio::test]
async fn only_the_right_user_and_password_pass() {
    let hash = bcrypt::hash("right", 4).unwrap();
    let auth = BasicAuth::new(Path::new("web.yml"), vec![("alice".into(), hash)]).unwrap();
    assert!(allows(&auth, Some(&header("alice", "right"))).await);
    // Again, now from the cache.
    assert!(allows(&auth, Some(&header("alice", "right"))).await);
    assert!(!allows(&auth, Some(&header("alice", "wrong"))).await);
    assert!(!allows(&auth, Some(&header("bob", "right"))).await);
    assert!(!allows(&auth, Some(&header("alice", ""))).await);
    assert!(!allows(&auth, None).await);
    assert!(allows(&BasicAuth::none(), None).await);
}

#[tokio::test]
async fn htpasswd_and_go_hash_prefixes_are_accepted() {
    // htpasswd writes $2y$, Go's bcrypt $2a$; the algorithm is the same as $2b$.
    let hash = bcrypt::hash("pw", 4).unwrap();
    assert!(hash.starts_with("$2b$"), "{hash}");
    for prefix in ["$2y$", "$2a$"] {
        let other = format!("{prefix}{}", &hash[4..]);
        let auth = BasicAuth::new(Path::new("web.yml"), vec![("u".into(), other)]).unwrap();
        assert!(allows(&auth, Some(&header("u", "pw"))).await, "{prefix}");
        assert!(!allows(&auth, Some(&header("u", "pW"))).await, "{prefix}");
    }
}

#[test]
fn the_dummy_hash_costs_as_much_as_the_dearest_user() {
    let auth = BasicAuth::new(
        Path::new("web.yml"),
        vec![
            ("a".into(), bcrypt::hash("x", 4).unwrap()),
            ("b".into(), bcrypt::hash("y", 5).unwrap()),
        ],
    )
    .unwrap();
    let dummy: bcrypt::HashParts = auth.dummy.as_ref().unwrap().expose().parse().unwrap();
    assert_eq!(dummy.get_cost(), 5);
}

/// The check of an unknown user runs against the costliest real hash, so a real user's
/// password under a name that is not in the file matches it: that is still a denial, and a
/// failure of that address.
#[tokio::test]
async fn another_users_password_under_an_unknown_name_is_denied() {
    let auth = one_user("right", 4);
    assert!(allows(&auth, Some(&header("alice", "right"))).await);
    let attacker = address(7);
    for name in ["mallory", "Alice", ""] {
        assert_eq!(
            auth.check(Some(&header(name, "right")), attacker).await,
            AuthOutcome::Denied,
            "{name:?}"
        );
    }
    assert_eq!(auth.check_stats().completed, 4);
    for _ in 3..MAX_FAILURES_PER_ADDRESS {
        let _ = auth
            .check(Some(&header("mallory", "right")), attacker)
            .await;
    }
    // Counted as failures: the address is now refused without a check (only credentials
    // the cache already holds, alice's, still get in: they cost nothing to check).
    let checked = auth.check_stats().completed;
    assert!(matches!(
        auth.check(Some(&header("mallory", "right")), attacker)
            .await,
        AuthOutcome::Throttled { .. }
    ));
    assert_eq!(auth.check_stats().completed, checked);
}

#[test]
fn the_cache_holds_a_bounded_number_of_digests_not_passwords() {
    let auth = BasicAuth::none();
    let hash = Secret::new("h");
    for i in 0..(AUTH_CACHE_CAPACITY * 3) {
        auth.remember(auth.cache_entry(b"u", &hash, i.to_string().as_bytes()));
    }
    assert_eq!(auth.verified.lock().unwrap().len(), AUTH_CACHE_CAPACITY);
    let a = auth.cache_entry(b"ab", &hash, b"c");
    let b = auth.cache_entry(b"a", &hash, b"bc");
    assert_ne!(a, b);
}

#[test]
fn a_bad_reload_keeps_the_previous_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let path = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  alice: {hash}\n"),
    );
    let web = WebConfig::load(&path).unwrap();
    assert_eq!(web.reload_if_changed(), Ok(false));
    write(dir.path(), "web.yml", "basic_auth_users:\n  alice: nope\n");
    let e = web.reload_if_changed().unwrap_err();
    assert_eq!(e.key.as_deref(), Some("basic_auth_users.alice"));
    assert_eq!(web.current().users.len(), 1);
    // Reported once per change, not at every poll.
    assert_eq!(web.reload_if_changed(), Ok(false));
    write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  alice: {hash}\n  bob: {hash}\n"),
    );
    assert_eq!(web.reload_if_changed(), Ok(true));
    assert_eq!(web.current().users.len(), 2);
}

#[test]
fn a_reload_cannot_switch_tls_on_or_off() {
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    let path = write(dir.path(), "web.yml", "");
    let web = WebConfig::load(&path).unwrap();
    assert!(!web.tls_enabled());
    write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let e = web.reload().unwrap_err();
    assert!(e.to_string().contains("restart"), "{e}");
    assert!(web.current().tls.is_none());
}

#[test]
fn a_renewed_certificate_counts_as_a_change() {
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    let path = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let web = WebConfig::load(&path).unwrap();
    let before = web.current();
    assert_eq!(web.reload_if_changed(), Ok(false));
    cert_files(dir.path());
    assert_eq!(web.reload_if_changed(), Ok(true));
    assert!(!Arc::ptr_eq(&before, &web.current()));
}

/// Replaces `path` with a FIFO that nobody writes to.
fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let _ = std::fs::remove_file(path);
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
}

/// Runs `f` on its own thread and fails the test if it has not returned within 10 s.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

#[test]
fn a_fifo_or_a_huge_file_in_place_of_the_certificate_is_refused_and_later_reloads_work() {
    // Bug 7: a FIFO as cert.pem blocked the reload for ever, and every reload after it.
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    let path = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let web = Arc::new(WebConfig::load(&path).unwrap());
    let before = web.current();
    let cert = dir.path().join("cert.pem");
    make_fifo(&cert);
    for _ in 0..2 {
        let w = Arc::clone(&web);
        let e = within_deadline("a reload on a FIFO", move || w.reload()).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(!e.to_string().contains('\n'));
        let w = Arc::clone(&web);
        // Seen at the reload just before: no change, and no hang.
        assert_ne!(
            within_deadline("a poll on a FIFO", move || w.reload_if_changed()),
            Ok(true)
        );
        assert!(Arc::ptr_eq(&before, &web.current()));
    }
    // Bounded: a file larger than any certificate is refused unread.
    std::fs::remove_file(&cert).unwrap();
    let big = std::fs::File::create(&cert).unwrap();
    big.set_len(super::file::MAX_FILE_BYTES + 1).unwrap();
    let e = web.reload().unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    // The file restored: the next reload works.
    cert_files(dir.path());
    let w = Arc::clone(&web);
    within_deadline("a reload", move || w.reload()).unwrap();
    assert!(!Arc::ptr_eq(&before, &web.current()));
    // The web configuration itself is guarded the same way, at start too.
    make_fifo(&path);
    let e = within_deadline("a load of a FIFO", {
        let path = path.clone();
        move || WebConfig::load(path).map(|_| ())
    })
    .unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
}

#[test]
fn a_reload_that_turns_something_off_must_say_so_and_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let path = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  alice: {hash}\n"),
    );
    let web = WebConfig::load(&path).unwrap();
    for text in ["", "# x\n", "~\n", "basic_auth_users:\n"] {
        write(dir.path(), "web.yml", text);
        let e = web.apply().unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert_eq!(web.current().users.len(), 1, "{text:?}");
    }
    write(dir.path(), "web.yml", "basic_auth_users: {}\n");
    let note = web.apply().unwrap().turned_off.unwrap();
    assert!(note.contains("basic auth"), "{note}");
    assert!(web.current().users.is_empty());
    // Nothing in force to turn off: a plain reload.
    assert_eq!(web.apply().unwrap().turned_off, None);
    // At start, an empty file still configures nothing, as before.
    write(dir.path(), "web.yml", "");
    assert!(WebConfig::load(&path).unwrap().current().users.is_empty());
}

#[test]
fn a_reload_keeps_client_certificates_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    cert_files(dir.path());
    std::fs::copy(dir.path().join("cert.pem"), dir.path().join("ca.pem")).unwrap();
    const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
    let path = write(
        dir.path(),
        "web.yml",
        &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"),
    );
    let web = WebConfig::load(&path).unwrap();
    write(dir.path(), "web.yml", TLS);
    let e = web.apply().unwrap_err();
    assert_eq!(e.key.as_deref(), Some("tls_server_config.client_auth_type"));
    assert_eq!(
        web.current().client_auth,
        ClientAuth::RequireAndVerifyClientCert
    );
    write(
        dir.path(),
        "web.yml",
        &format!("{TLS}  client_auth_type: NoClientCert\n"),
    );
    let note = web.apply().unwrap().turned_off.unwrap();
    assert!(note.contains("client certificates"), "{note}");
    assert_eq!(web.current().client_auth, ClientAuth::NoClientCert);
}
