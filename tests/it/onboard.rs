//! Issue 21: a person joins from their own phone. Invite links, the page they open, the
//! simulator's sign-in page, Withings' redirect back to `/auth/callback`, the refusals, the
//! landing page's household and invite forms. Driven over HTTP here, as a browser would
//! without script; `browser.rs` walks the same journey in Chromium.

use crate::common;
use crate::common::accounts::{directory_vars, five_vitals, write_account};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use withings_exporter::account::token_store::TokenStore;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::onboard::{Invites, Onboarding};
use withings_exporter::http::web_config::WebConfig;
use withings_exporter::invite::InviteStore;
use withings_sim::{Simulator, SimulatorOptions};

/// A household of accounts (name, Withings user, systolic base), an exporter serving it with
/// WITHINGS_PUBLIC_URL set to its own address, and the simulator's interactive sign-in page.
pub struct Onboard {
    pub simulator: Simulator,
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub base: String,
    /// A browser without script that does not follow redirects: each hop is checked.
    pub http: reqwest::Client,
    _web_dir: Option<tempfile::TempDir>,
    _server: common::Served,
}

impl Onboard {
    pub async fn start(accounts: &[(&str, &str, i64)], web_users: &[(&str, &str)]) -> Self {
        let simulator = Simulator::start(SimulatorOptions::default())
            .await
            .expect("simulator starts");
        simulator.set_interactive_authorization(true);
        let dir = tempfile::tempdir().expect("temp dir");
        for (i, (name, userid, base)) in accounts.iter().enumerate() {
            simulator
                .set_user_groups(userid, five_vitals(1_000 * (i as i64 + 1), *base))
                .expect("groups");
            write_account(&simulator, dir.path(), name, userid);
        }
        // Users who have not been linked yet.
        for userid in ["2003", "2004"] {
            simulator.add_user(userid);
        }
        let mut vars = directory_vars(&simulator, dir.path());
        vars.push(("WITHINGS_ACCOUNT_URL".into(), simulator.url().to_string()));
        let web_dir = (!web_users.is_empty()).then(|| {
            let web_dir = tempfile::tempdir().expect("temp dir");
            let mut text = String::from("basic_auth_users:\n");
            for (user, password) in web_users {
                let hash = bcrypt::hash(password, 4).expect("hash");
                text.push_str(&format!("  {user}: {hash}\n"));
            }
            std::fs::write(web_dir.path().join("web.yml"), text).expect("web config");
            web_dir
        });
        let mut config = Config::from_vars(vars).expect("valid configuration");
        let app = Arc::new(App::from_config(&config).expect("the exporter starts"));
        let server = common::bind(Arc::clone(&app)).await;
        let address = server.local_addr().expect("address");
        let base = format!("http://{address}");
        config.server.public_url = Some(url::Url::parse(&base).expect("url"));
        simulator.set_redirect_uri(&format!("{base}/auth/callback"));
        let onboarding = Onboarding::from_config(&config).expect("onboarding on");
        let mut server = server.with_onboarding(Arc::new(onboarding));
        if let Some(web_dir) = &web_dir {
            let web = WebConfig::load(web_dir.path().join("web.yml")).expect("web config loads");
            server = server.with_web_config(Arc::new(web));
        }
        let served = common::serve(server);
        Self {
            simulator,
            dir,
            app,
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            _web_dir: web_dir,
            _server: served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.json"))
    }

    pub fn invites(&self) -> Invites {
        Invites::new(
            self.dir.path().to_path_buf(),
            url::Url::parse(&self.base).expect("url"),
        )
    }

    /// A link made as `invite --account NAME` makes it.
    pub fn invite(&self, name: &str) -> String {
        let (link, _) = self
            .invites()
            .create(
                name,
                Duration::from_secs(3600),
                common::accounts::unix_now(),
            )
            .expect("invite created");
        link.expose().to_owned()
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.expect("request")
    }

    /// Opens the invite link, presses its button: Withings' authorization URL.
    pub async fn press_the_button(&self, link: &str) -> String {
        let page = self.get(link).await;
        assert_eq!(page.status(), 200);
        let page = page.text().await.expect("page");
        let csrf = hidden(&page, "csrf");
        let pressed = self
            .http
            .post(link)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("post");
        assert_eq!(pressed.status(), 303);
        location(&pressed)
    }

    /// At the simulated Withings: the sign-in page, then "sign in as" `userid` (or decline):
    /// the redirect back to the exporter.
    pub async fn at_withings(&self, authorize: &str, choice: Choice<'_>) -> String {
        let page = self.get(authorize).await;
        assert_eq!(page.status(), 200);
        let page = page.text().await.expect("page");
        assert!(page.contains("Sign in as user"), "{page}");
        let mut form: Vec<(String, String)> = url::Url::parse(authorize)
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect();
        match choice {
            Choice::SignInAs(userid) => form.push(("userid".into(), userid.into())),
            Choice::Decline => form.push(("decline".into(), "1".into())),
        }
        let answer = self
            .http
            .post(
                self.simulator
                    .url()
                    .join("oauth2_user/authorize2")
                    .expect("url"),
            )
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 302);
        location(&answer)
    }

    /// The whole journey from the link to the exporter's last page.
    pub async fn journey(&self, link: &str, choice: Choice<'_>) -> (u16, String) {
        let authorize = self.press_the_button(link).await;
        let back = self.at_withings(&authorize, choice).await;
        let done = self.get(&back).await;
        let status = done.status().as_u16();
        (status, done.text().await.expect("page"))
    }

    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }
}

#[derive(Clone, Copy)]
pub enum Choice<'a> {
    SignInAs(&'a str),
    Decline,
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

/// The value of the hidden field `name` of a page.
pub fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name}: {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const MOM: (&str, &str, i64) = ("mom", "2001", 121);
const BEN: (&str, &str, i64) = ("ben", "2002", 143);

#[tokio::test]
async fn an_invited_person_links_their_account_and_appears_on_sd_and_the_landing_page() {
    let logs = common::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let h = Onboard::start(&[MOM, BEN], &[]).await;
    // The landing page's form, as the household's admin uses it.
    let landing = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(
        landing.contains("Anyone who can reach this page can see it and invite people"),
        "{landing}"
    );
    let csrf = hidden(&landing, "csrf");
    let created = h
        .http
        .post(h.url("/invites"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("account", "dad"),
            ("valid", "24h"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let page = created.text().await.unwrap();
    let link = hidden(
        &page.replace("readonly value", "name=\"link\" value"),
        "link",
    );
    assert!(link.starts_with(&h.url("/invite/")), "{link}");
    assert!(page.contains("<svg") && page.contains("QR code"), "{page}");
    let token = link.rsplit('/').next().unwrap().to_owned();
    assert!(token.len() >= 43, "at least 128 bits: {token}");
    // Only its hash is stored.
    let store = std::fs::read_to_string(h.dir.path().join(".invites.json")).unwrap();
    assert!(!store.contains(&token));
    assert_eq!(mode(&h.dir.path().join(".invites.json")), 0o600);
    // The landing page lists it, without the link.
    let landing = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(landing.contains("Revoke the invite of dad"), "{landing}");
    assert!(!landing.contains(&token));

    // The person's phone: the invite page in plain words.
    let invite_page = h.get(&link).await;
    assert_eq!(invite_page.status(), 200);
    let headers = invite_page.headers().clone();
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    let text = invite_page.text().await.unwrap();
    assert!(text.contains("as <strong>dad</strong>"), "{text}");
    assert!(
        text.contains("Your measurements"),
        "the scopes in words: {text}"
    );
    assert!(text.contains("sign out there first"), "{text}");
    assert!(!text.contains("<script"), "{text}");

    let authorize = h.press_the_button(&link).await;
    let params: HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(params["redirect_uri"], h.url("/auth/callback"));
    assert!(
        !authorize.contains(&token),
        "the invite token never goes to Withings"
    );
    let back = h.at_withings(&authorize, Choice::SignInAs("2003")).await;
    assert!(back.starts_with(&h.url("/auth/callback?")), "{back}");
    let done = h.get(&back).await;
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["referrer-policy"], "no-referrer");
    let done = done.text().await.unwrap();
    assert!(done.contains("Done") && done.contains("dad"), "{done}");

    let tokens = TokenStore::new(h.path("dad")).load().unwrap().unwrap();
    assert_eq!(tokens.userid.as_deref(), Some("2003"));
    assert_eq!(mode(&h.path("dad")), 0o600);
    // Picked up at once: on /sd and the landing page.
    let sd = h.get(&h.url("/sd")).await.text().await.unwrap();
    assert!(sd.contains("\"account\":\"dad\""), "{sd}");
    let landing = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(
        landing.contains("<h3 id=\"person-dad\">dad</h3>"),
        "{landing}"
    );
    assert!(
        !landing.contains("Revoke the invite of dad"),
        "used: {landing}"
    );

    // The link works once.
    let again = h.get(&link).await;
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already used"));
    // Nothing secret was logged: not the token, the state, the code, nor the tokens.
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let text = logs.text();
    // The capture saw the handlers' lines. (Only lines no other test logs at the same time
    // are sure to be here: tracing caches whether a line is wanted where it is first hit.)
    assert!(
        text.contains("invite created from the landing page") && text.contains("account=\"dad\""),
        "{text}"
    );
    for secret in [
        token.as_str(),
        params["state"].as_str(),
        code.as_str(),
        tokens.access_token.expose(),
        tokens.refresh_token.expose(),
    ] {
        assert!(!text.contains(secret), "a secret in the log: {text}");
    }
}

#[tokio::test]
async fn the_same_withings_user_under_another_name_writes_nothing_and_says_which() {
    let h = Onboard::start(&[MOM], &[]).await;
    let link = h.invite("dad");
    let before = std::fs::read(h.path("mom")).unwrap();
    let (status, page) = h.journey(&link, Choice::SignInAs("2001")).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("already linked here as <strong>mom</strong>"),
        "{page}"
    );
    assert_eq!(h.files(), ["mom.json"]);
    assert_eq!(std::fs::read(h.path("mom")).unwrap(), before);
    // The link still works: signed in as the right person, it links.
    let (status, page) = h.journey(&link, Choice::SignInAs("2003")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(h.files(), ["dad.json", "mom.json"]);
}

#[tokio::test]
async fn declining_tampering_expiry_revocation_and_unknown_links_write_nothing() {
    let h = Onboard::start(&[MOM], &[]).await;
    // Declined at Withings: the page says so; the link still works.
    let link = h.invite("dad");
    let (status, page) = h.journey(&link, Choice::Decline).await;
    assert_eq!(status, 200);
    assert!(page.contains("You declined"), "{page}");
    assert_eq!(h.get(&link).await.status(), 200);
    // A tampered state, a missing one, a replayed one.
    let authorize = h.press_the_button(&link).await;
    let back = h.at_withings(&authorize, Choice::SignInAs("2003")).await;
    let mut tampered = url::Url::parse(&back).unwrap();
    let pairs: Vec<(String, String)> = tampered.query_pairs().into_owned().collect();
    tampered.query_pairs_mut().clear();
    for (k, v) in &pairs {
        let v = if k == "state" {
            format!("{v}x")
        } else {
            v.clone()
        };
        tampered.query_pairs_mut().append_pair(k, &v);
    }
    let refused = h.get(tampered.as_str()).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Nothing was saved"));
    let no_state = back.split("&state=").next().unwrap().to_owned();
    assert_eq!(h.get(&no_state).await.status(), 400);
    assert_eq!(h.files(), ["mom.json"]);
    // The genuine one still completes once; replayed, it is refused.
    assert_eq!(h.get(&back).await.status(), 200);
    assert_eq!(h.files(), ["dad.json", "mom.json"]);
    assert_eq!(h.get(&back).await.status(), 400);

    // Expired: made two hours ago, valid one.
    let store = InviteStore::in_dir(h.dir.path());
    let old = store
        .create(
            "eve",
            Duration::from_secs(3600),
            None,
            common::accounts::unix_now() - 7200,
        )
        .unwrap();
    let expired = h.get(&h.url(&format!("/invite/{}", old.expose()))).await;
    assert_eq!(expired.status(), 410);
    assert!(expired.text().await.unwrap().contains("expired"));
    // Revoked, from the command line's library call.
    let link = h.invite("fay");
    assert_eq!(
        h.invites()
            .revoke("fay", common::accounts::unix_now())
            .unwrap(),
        1
    );
    let revoked = h.get(&link).await;
    assert_eq!(revoked.status(), 410);
    assert!(revoked.text().await.unwrap().contains("revoked"));
    // Unknown.
    let unknown = h
        .get(&h.url("/invite/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await;
    assert_eq!(unknown.status(), 404);
    // A button pressed with a stale form.
    let link = h.invite("gus");
    let stale = h
        .http
        .post(&link)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 403);
    assert_eq!(h.files(), ["dad.json", "mom.json"]);
}

#[tokio::test]
async fn reauthorization_links_accept_only_the_same_withings_user() {
    let h = Onboard::start(&[MOM, BEN], &[]).await;
    let (link, reauthorize) = h
        .invites()
        .create(
            "mom",
            Duration::from_secs(3600),
            common::accounts::unix_now(),
        )
        .unwrap();
    assert!(reauthorize, "mom exists: the link re-authorizes her");
    let link = link.expose().to_owned();
    let before = std::fs::read(h.path("mom")).unwrap();
    let (status, page) = h.journey(&link, Choice::SignInAs("2003")).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("belongs to another Withings user"), "{page}");
    assert_eq!(std::fs::read(h.path("mom")).unwrap(), before);
    let (status, page) = h.journey(&link, Choice::SignInAs("2001")).await;
    assert_eq!(status, 200, "{page}");
    assert_ne!(std::fs::read(h.path("mom")).unwrap(), before, "new tokens");
}

#[tokio::test]
async fn the_landing_page_shows_the_household_readings_with_marks_and_reauthorize() {
    let h = Onboard::start(&[MOM, BEN], &[]).await;
    for name in ["mom", "ben"] {
        let r = h.get(&h.url(&format!("/probe?account={name}"))).await;
        assert_eq!(r.status(), 200);
    }
    let landing = h.get(&h.url("/")).await;
    assert_eq!(landing.headers()["x-frame-options"], "DENY");
    let page = landing.text().await.unwrap();
    let section = |name: &str| {
        let start = page.find(&format!("id=\"person-{name}\"")).unwrap();
        page[start..start + page[start..].find("</section>").unwrap()].to_owned()
    };
    let mom = section("mom");
    assert!(mom.contains("121/81 mmHg"), "{mom}");
    assert!(mom.contains("Pulse</dt><dd>61 bpm"), "{mom}");
    assert!(mom.contains("min ago") || mom.contains("h ago"), "{mom}");
    assert!(!mom.contains("mmHg <strong"), "121/81 is in range: {mom}");
    // five_vitals gives SpO2 91 %: under the SpO2Low rule's 92 %.
    assert!(mom.contains("91 % <strong class=\"out\">(low"), "{mom}");
    let ben = section("ben");
    assert!(
        ben.contains("143/103 mmHg <strong class=\"out\">(high"),
        "{ben}"
    );
    assert!(ben.contains("probe?account=ben"), "{ben}");
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("Re-authorize"), "both tokens work: {page}");
    // A token that stopped working: "Re-authorize", which makes a link bound to the user.
    std::fs::write(h.path("ben"), "{\"access_token\": \"half").unwrap();
    h.app.scan();
    let page = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(page.contains("Re-authorize ben"), "{page}");
}

#[tokio::test]
async fn with_basic_auth_the_landing_and_its_forms_need_a_user_and_the_invite_pages_do_not() {
    let h = Onboard::start(&[MOM], &[("admin", "s3cret")]).await;
    assert_eq!(h.get(&h.url("/")).await.status(), 401);
    let post = h
        .http
        .post(h.url("/invites"))
        .form(&[("account", "dad")])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    let landing = h
        .http
        .get(h.url("/"))
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!landing.contains("Anyone who can reach"), "{landing}");
    // Without the CSRF token, even with a user, nothing is created.
    let forged = h
        .http
        .post(h.url("/invites"))
        .basic_auth("admin", Some("s3cret"))
        .form(&[("account", "dad"), ("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        h.invites()
            .open(common::accounts::unix_now())
            .unwrap()
            .is_empty()
    );
    // The person invited has no password.
    let link = h.invite("dad");
    let (status, page) = h.journey(&link, Choice::SignInAs("2003")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(h.files(), ["dad.json", "mom.json"]);
}

#[tokio::test]
async fn invite_attempts_are_rate_limited_per_address() {
    let h = Onboard::start(&[MOM], &[]).await;
    let url = h.url("/invite/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for _ in 0..withings_exporter::http::onboard::RATE_LIMIT {
        assert_eq!(h.get(&url).await.status(), 404);
    }
    let limited = h.get(&url).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(h.get(&h.url("/auth/callback?state=x")).await.status(), 429);
    // Other routes are not held back.
    let h2 = Onboard::start(&[MOM], &[]).await;
    let head = h2
        .http
        .head(h2.url("/auth/callback?state=x&code=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405, "no exchange on a HEAD");
    assert_eq!(h.get(&h.url("/-/healthy")).await.status(), 200);
}

const BIN: &str = env!("CARGO_BIN_EXE_withings-exporter");

#[test]
fn the_invite_command_prints_the_link_only_lists_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .env("WITHINGS_TOKEN_DIR", dir.path())
            .env("WITHINGS_PUBLIC_URL", "https://health.example.org/")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["invite", "--account", "dad", "--valid", "2h"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with("https://health.example.org/invite/"),
        "{out}"
    );
    let (code, out, _) = run(&["invite", "--list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("dad\texpires ") && out.contains(" UTC (in "),
        "{out}"
    );
    assert!(!out.contains("/invite/"), "{out}");
    let (code, out, _) = run(&["invite", "--revoke", "dad"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("dad: 1 open invite(s) revoked"), "{out}");
    assert_eq!(run(&["invite", "--list"]).1, "no open invite\n");
    let (code, _, err) = run(&["invite", "--account", "Bad Name"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not an account name"), "{err}");
    let (code, _, err) = run(&["invite", "--account", "dad", "--valid", "90d"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at most 30 days"), "{err}");
    let out = std::process::Command::new(BIN)
        .args(["invite", "--account", "dad"])
        .env_clear()
        .env("WITHINGS_TOKEN_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("WITHINGS_PUBLIC_URL") && err.contains("/auth/callback"),
        "{err}"
    );
}

#[tokio::test]
async fn the_auth_commands_browser_page_says_what_the_terminal_says() {
    use withings_exporter::account::tokens::ClientCredentials;
    use withings_exporter::auth::{AuthError, AuthSettings, Authorization};
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_account(&sim, dir.path(), "mom", "2001");
    // The browser is still signed in as mom while ben is being added.
    sim.sign_in("2001");
    let (client_id, client_secret) = sim.client_credentials();
    let settings = |name: &str| AuthSettings {
        api_url: sim.url(),
        account_url: sim.url(),
        credentials: ClientCredentials {
            client_id: client_id.clone(),
            client_secret: withings_exporter::secret::Secret::new(client_secret.clone()),
        },
        redirect_uri: url::Url::parse("http://127.0.0.1:0/callback").unwrap(),
        token_file: dir.path().join(format!("{name}.json")),
        client: withings_exporter::withings::ClientOptions::default(),
        listen: None,
        scopes: withings_exporter::auth::default_scopes(),
        account: Some(name.to_owned()),
        requests_per_minute: withings_exporter::config::DEFAULT_PER_MINUTE,
    };
    for (name, userid, authorized) in [("ben", "2001", false), ("ben", "2002", true)] {
        sim.sign_in(userid);
        let mut auth = Authorization::new(settings(name)).unwrap();
        let listener = auth.listen().await.unwrap();
        sim.set_redirect_uri(auth.redirect_uri().as_str());
        let url = auth.url();
        let browser = tokio::spawn(async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        });
        let result = auth
            .receive_and_exchange(listener, Duration::from_secs(10))
            .await;
        let (status, page) = browser.await.unwrap();
        if authorized {
            assert!(result.is_ok(), "{result:?}");
            assert_eq!(status, 200);
            assert!(page.contains("Authorized as Withings user 2002"), "{page}");
        } else {
            assert!(
                matches!(result, Err(AuthError::SameUser { .. })),
                "{result:?}"
            );
            assert_eq!(status, 400);
            assert!(!page.contains("Authorized"), "{page}");
            assert!(
                page.contains("already the account &quot;mom&quot;")
                    || page.contains("already the account \"mom\""),
                "{page}"
            );
            assert!(!dir.path().join("ben.json").exists());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_landing_page_and_its_household_invites_a_fourth_person() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .arg("demo")
        .env_clear()
        .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = common::process::ChildGuard(child);
    let line = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("landing page is"))
    })
    .await
    .unwrap()
    .expect("the demo prints its landing page");
    let base = line
        .split("landing page is ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let landing = http.get(format!("{base}/")).send().await.unwrap();
    let landing = landing.text().await.unwrap();
    let csrf = hidden(&landing, "csrf");
    let page = http
        .post(format!("{base}/invites"))
        .form(&[("csrf", csrf.as_str()), ("account", "robin")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let link = hidden(
        &page.replace("readonly value", "name=\"link\" value"),
        "link",
    );
    let invite = http.get(&link).send().await.unwrap().text().await.unwrap();
    let pressed = http
        .post(&link)
        .form(&[("csrf", hidden(&invite, "csrf").as_str())])
        .send()
        .await
        .unwrap();
    let authorize = url::Url::parse(&location(&pressed)).unwrap();
    let sign_in = http
        .get(authorize.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let guest = withings_sim::household::GUEST_USERID;
    assert!(
        sign_in.contains(&format!("Sign in as user {guest}")),
        "{sign_in}"
    );
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("userid".into(), guest.into()));
    let back = http
        .post(authorize.join("/oauth2_user/authorize2").unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    let done = http.get(location(&back)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Done"));
    let sd = http
        .get(format!("{base}/sd"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sd.contains("\"account\":\"robin\""), "{sd}");
    let probe = http
        .get(format!("{base}/probe?account=robin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::sample(&probe, "withings_up"), Some(1.0), "{probe}");
}

#[tokio::test]
async fn the_landing_page_revokes_an_open_invite() {
    let h = Onboard::start(&[MOM], &[]).await;
    let link = h.invite("dad");
    let landing = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(landing.contains("Revoke the invite of dad"), "{landing}");
    let csrf = hidden(&landing, "csrf");
    let forged = h
        .http
        .post(h.url("/invites/revoke"))
        .form(&[("csrf", "nope"), ("account", "dad")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(h.get(&link).await.status(), 200, "still open");
    let revoked = h
        .http
        .post(h.url("/invites/revoke"))
        .form(&[("csrf", csrf.as_str()), ("account", "dad")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    assert_eq!(h.get(&link).await.status(), 410);
    let landing = h.get(&h.url("/")).await.text().await.unwrap();
    assert!(!landing.contains("Revoke the invite of dad"), "{landing}");
}

#[tokio::test]
async fn without_a_public_url_the_landing_page_says_what_to_set_and_no_invite_route_answers() {
    let h = common::accounts::Household::start(&[MOM], &[]).await;
    let (status, page) = h.get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("set WITHINGS_PUBLIC_URL") && page.contains("/auth/callback"),
        "{page}"
    );
    assert!(!page.contains("name=\"csrf\""), "no form: {page}");
    for path in [
        "/invite/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/auth/callback?state=x&code=y",
    ] {
        assert_eq!(h.get(path).await.0, 404, "{path}");
    }
    let post = h
        .http
        .post(h.url("/invites"))
        .form(&[("account", "dad")])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    assert!(!h.dir.path().join(".invites.json").exists());
}
