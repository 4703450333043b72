//! Issue 21 in a real browser: Debian's Chromium, headless, driven through Debian's
//! chromium-driver (WebDriver) with fantoccini. The journey from the landing page's "Add a
//! person" to "Done" and the person on `/sd`, then the refusals; screenshots at a phone's
//! width (375 px) and a desktop's go to `target/ci-artifacts/`, and axe-core (from npm, in
//! `target/axe/`) finds no serious or critical accessibility violation on the pages.
//!
//! Ignored by default like the other tests of outside programs; `.ci/run` installs
//! `chromium`, `chromium-driver` and axe-core and runs it with `--include-ignored`.

use crate::common::process::ChildGuard;
use crate::onboard::Onboard;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MOM: (&str, &str, i64) = ("mom", "2001", 121);
const BEN: (&str, &str, i64) = ("ben", "2002", 143);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn artifacts() -> PathBuf {
    let dir = repo().join("target/ci-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// chromedriver on an ephemeral port (it prints the port it took); killed however the test
/// ends.
fn start_chromedriver() -> (ChildGuard, u16) {
    let mut child = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (Debian package chromium-driver; .ci/run installs it)");
    let stdout = child.stdout.take().expect("stdout piped");
    let guard = ChildGuard(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("chromedriver printed its port")
            .expect("a line");
        if let Some(port) = line.split("started successfully on port ").nth(1) {
            break port
                .trim()
                .trim_end_matches('.')
                .parse()
                .expect("a port number");
        }
    };
    // The rest of its output is drained so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (guard, port)
}

async fn browser(port: u16, profile: &Path) -> Client {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        &format!("--user-data-dir={}", profile.display()),
        "--window-size=1280,900",
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = ClientBuilder::new(connector);
    builder.capabilities(caps);
    builder
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

/// Saves the page at a phone's width and at a desktop's.
async fn screenshots(c: &Client, name: &str) {
    for (suffix, width, height) in [("375", 375, 812), ("desktop", 1280, 900)] {
        c.set_window_size(width, height).await.expect("resize");
        // Readable at that width: nothing wider than the window.
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("measured");
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{name} is wider than {width} px"
        );
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(artifacts().join(format!("{name}-{suffix}.png")), png).expect("saved");
    }
}

/// axe-core's serious and critical violations on the page (empty is good).
async fn axe_violations(c: &Client) -> Vec<String> {
    let axe = std::fs::read_to_string(repo().join("target/axe/node_modules/axe-core/axe.min.js"))
        .expect(
            "axe-core installed in target/axe (.ci/run: npm install --prefix target/axe axe-core)",
        );
    c.execute(&axe, vec![]).await.expect("axe injected");
    let result = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                      v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe ran");
    serde_json::from_value(result).expect("a list")
}

async fn assert_accessible(c: &Client, what: &str) {
    let violations = axe_violations(c).await;
    assert!(violations.is_empty(), "{what}: {violations:#?}");
}

async fn page(c: &Client) -> String {
    c.source().await.expect("page source")
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Waits until the page's text contains `needle` (navigation after a click is not
/// synchronous), with a deadline.
async fn wait_for(c: &Client, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = page(c).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {needle:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses `key` on the keyboard, wherever the focus is.
async fn press(c: &Client, key: fantoccini::key::Key) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let value: char = key.into();
    let actions = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value })
        .then(KeyAction::Up { value });
    c.perform_actions(actions).await.expect("key pressed");
}

/// Moves the focus with Tab, as a keyboard user does, until it is on an element matching
/// `css`; fails after 40 presses.
async fn tab_to(c: &Client, css: &str) {
    for _ in 0..40 {
        press(c, fantoccini::key::Key::Tab).await;
        let there = c
            .execute(
                "return document.activeElement.matches(arguments[0]);",
                vec![serde_json::json!(css)],
            )
            .await
            .expect("focus read");
        if there == serde_json::json!(true) {
            return;
        }
    }
    panic!("Tab never reached {css}");
}

/// Opens `link`, presses the button and arrives at the simulated Withings sign-in page.
async fn to_withings(c: &Client, h: &Onboard, link: &str) {
    c.goto(link).await.expect("invite page");
    wait_for(c, "Continue to Withings").await;
    click(c, "form button[type=submit]").await;
    wait_for(c, "Sign in as user").await;
    let at = c.current_url().await.expect("url");
    assert_eq!(
        at.port_or_known_default(),
        h.simulator.url().port_or_known_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (Debian packages) and axe-core (npm, in target/axe); .ci/run installs them"]
async fn a_person_joins_from_their_own_browser() {
    let h = Onboard::start(&[MOM, BEN], &[]).await;
    for name in ["mom", "ben"] {
        h.get(&h.url(&format!("/probe?account={name}"))).await;
    }
    let (_driver, port) = start_chromedriver();
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(port, profile.path()).await;

    // The household's landing page; "Add a person".
    c.goto(&h.url("/")).await.expect("landing");
    wait_for(&c, "Add a person").await;
    screenshots(&c, "landing").await;
    assert_accessible(&c, "landing page").await;
    // With the keyboard only: Tab to the name, type it, Tab to the button, Enter.
    tab_to(&c, "#invite-account").await;
    c.active_element()
        .await
        .expect("focused")
        .send_keys("dad")
        .await
        .expect("typed");
    tab_to(&c, "form[action=invites] button[type=submit]").await;
    press(&c, fantoccini::key::Key::Enter).await;
    wait_for(&c, "Invite link for").await;
    screenshots(&c, "invite-link").await;
    assert_accessible(&c, "the new link's page").await;
    let link = c
        .find(Locator::Id("link"))
        .await
        .expect("the link field")
        .prop("value")
        .await
        .expect("value")
        .expect("a link");
    assert!(link.starts_with(&h.url("/invite/")), "{link}");

    // The person's phone.
    c.goto(&link).await.expect("invite page");
    wait_for(&c, "Continue to Withings").await;
    screenshots(&c, "invite").await;
    assert_accessible(&c, "invite page").await;
    tab_to(&c, "form button[type=submit]").await;
    press(&c, fantoccini::key::Key::Enter).await;
    wait_for(&c, "Sign in as user").await;
    click(&c, "button[value='2003']").await;
    let done = wait_for(&c, "Your data appears").await;
    assert!(done.contains("<strong>dad</strong>"), "{done}");
    screenshots(&c, "done").await;
    assert_accessible(&c, "done page").await;
    let tokens = withings_exporter::account::token_store::TokenStore::new(h.path("dad"))
        .load()
        .expect("readable")
        .expect("written");
    assert_eq!(tokens.userid.as_deref(), Some("2003"));
    c.goto(&h.url("/")).await.expect("landing");
    wait_for(&c, "id=\"person-dad\"").await;
    c.goto(&h.url("/sd")).await.expect("sd");
    wait_for(&c, "\"account\":\"dad\"").await;

    // Refusals. The same link again.
    c.goto(&link).await.expect("used link");
    wait_for(&c, "already used").await;
    screenshots(&c, "refused-used").await;
    assert_accessible(&c, "refusal page").await;
    // The same Withings user as mom, under another name.
    let eve = h.invite("eve");
    to_withings(&c, &h, &eve).await;
    click(&c, "button[value='2001']").await;
    wait_for(&c, "already linked here as <strong>mom</strong>").await;
    // A tampered state.
    to_withings(&c, &h, &eve).await;
    c.execute(
        "document.querySelector('input[name=state]').value += 'x';",
        vec![],
    )
    .await
    .expect("state changed");
    click(&c, "button[value='2004']").await;
    wait_for(&c, "Sign-in not recognised").await;
    // Declined at Withings.
    to_withings(&c, &h, &eve).await;
    click(&c, "button[name=decline]").await;
    wait_for(&c, "You declined").await;
    // Expired.
    let old = withings_exporter::invite::InviteStore::in_dir(h.dir.path())
        .create(
            "fay",
            Duration::from_secs(60),
            None,
            crate::common::accounts::unix_now() - 3600,
        )
        .expect("created");
    c.goto(&h.url(&format!("/invite/{}", old.expose())))
        .await
        .expect("expired link");
    wait_for(&c, "expired").await;
    assert_eq!(h.files(), ["ben.json", "dad.json", "mom.json"]);
    c.close().await.expect("session closed");
}
