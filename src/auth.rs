//! `withings-exporter auth`: the first authorization. Builds the authorization URL, gets
//! the code back (from Withings' redirect to a one-shot local listener, or pasted by the
//! user on a headless server), exchanges it at once (a code lives 30 seconds) and writes
//! the token file.

use crate::account::token_store::{StoreError, StoredTokens, TokenStore};
use crate::account::tokens::ClientCredentials;
use crate::clock::Clock;
use crate::config::{AccountsConfig, CollectorsConfig, ConfigError, WithingsConfig};
use crate::secret::Secret;
use crate::withings::{ApiError, ClientOptions, Limits, StatusClass, WithingsClient};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use url::Url;

/// Path of the authorization page under `WITHINGS_ACCOUNT_URL`.
pub const AUTHORIZE_PATH: &str = "oauth2_user/authorize2";
/// The scopes of the default collectors (`WITHINGS_COLLECTORS` unset).
pub fn default_scopes() -> String {
    crate::collector::Collectors::default().scopes()
}

/// Everything `auth` needs, from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub api_url: Url,
    pub account_url: Url,
    pub credentials: ClientCredentials,
    pub redirect_uri: Url,
    pub token_file: PathBuf,
    pub client: ClientOptions,
    /// Where the redirect listener binds, when not the redirect URI's own host and port:
    /// in a container, 0.0.0.0:19101 receives what the host forwards to 127.0.0.1:19101.
    pub listen: Option<SocketAddr>,
    /// The scopes to ask for: those of the enabled collectors (`WITHINGS_COLLECTORS`).
    pub scopes: String,
    /// With `--account NAME`: the account's name; its file is `token_file` in
    /// `WITHINGS_TOKEN_DIR`, whose other accounts must not be the same Withings user.
    pub account: Option<String>,
    /// `WITHINGS_REQUESTS_PER_MINUTE`: the budget `auth` shares with the exporters and
    /// backfills on the same token directory.
    pub requests_per_minute: u32,
}

impl AuthSettings {
    pub fn from_config(
        withings: &WithingsConfig,
        accounts: &AccountsConfig,
        collectors: &CollectorsConfig,
    ) -> Result<Self, ConfigError> {
        let credentials = withings.client_credentials()?.ok_or_else(|| ConfigError {
            variable: "WITHINGS_CLIENT_ID",
            message: "not set; register an application at https://developer.withings.com and set WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET (or WITHINGS_CLIENT_SECRET_FILE)".into(),
        })?;
        let token_file = accounts.token_file.clone().ok_or_else(|| ConfigError {
            variable: "WITHINGS_TOKEN_FILE",
            message: if accounts.token_dir.is_some() {
                "not set, and WITHINGS_TOKEN_DIR is: name the account with `withings-exporter auth --account NAME`".into()
            } else {
                "not set; set it to the file the tokens are saved in (on a persistent volume), the same one the exporter will use, or set WITHINGS_TOKEN_DIR and use `auth --account NAME`".into()
            },
        })?;
        Ok(Self {
            api_url: withings.api_url.clone(),
            account_url: withings.account_url.clone(),
            credentials,
            redirect_uri: withings.redirect_uri.clone(),
            token_file,
            client: ClientOptions {
                request_timeout: withings.upstream_timeout,
                ..ClientOptions::default()
            },
            listen: None,
            scopes: crate::collector::Collectors::from_config(collectors)?.scopes(),
            account: None,
            requests_per_minute: withings.requests_per_minute,
        })
    }

    /// `auth --account NAME`: the account's file in `WITHINGS_TOKEN_DIR`.
    pub fn for_account(
        withings: &WithingsConfig,
        accounts: &AccountsConfig,
        collectors: &CollectorsConfig,
        name: &str,
    ) -> Result<Self, ConfigError> {
        if !crate::app::accounts::valid_name(name) {
            return Err(ConfigError {
                variable: "--account",
                message: format!(
                    "{:?} is not an account name: {}",
                    crate::text::one_line(name),
                    crate::app::accounts::name_rule()
                ),
            });
        }
        let dir = accounts.token_dir.clone().ok_or_else(|| ConfigError {
            variable: "WITHINGS_TOKEN_DIR",
            message: "not set; `auth --account NAME` writes NAME.json into it: set it to the directory the exporter serves accounts from".into(),
        })?;
        let with_file = AccountsConfig {
            token_file: Some(dir.join(format!("{name}.json"))),
            ..accounts.clone()
        };
        let mut settings = Self::from_config(withings, &with_file, collectors)?;
        settings.account = Some(name.to_owned());
        Ok(settings)
    }
}

/// Why `auth` did not produce a token file. One line each, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the redirect's state parameter does not match the one this run sent (a stale browser tab, or a forged request); nothing was saved: open the URL printed by this run and authorize again"
    )]
    StateMismatch,
    #[error(
        "Withings did not authorize the application ({0}); run `withings-exporter auth` again and accept the access request"
    )]
    Denied(String),
    #[error(
        "{0}; paste the whole URL your browser was sent to (it contains code=...&state=...), or just the code"
    )]
    NoCode(&'static str),
    #[error(
        "cannot listen for Withings' redirect on {address} ({cause}); free that port, set WITHINGS_REDIRECT_URI (it must equal the callback URL registered for your application), or use `withings-exporter auth --paste`"
    )]
    Listen {
        address: String,
        cause: std::io::Error,
    },
    #[error(
        "WITHINGS_REDIRECT_URI {0} cannot be listened on here (only http URLs with a host and port can); use `withings-exporter auth --paste`"
    )]
    CannotListen(String),
    #[error("no redirect from Withings arrived within {0:?}; run `withings-exporter auth` again")]
    Timeout(Duration),
    #[error(
        "Withings refused the authorization code ({0}): a code is valid for 30 seconds and only once; run `withings-exporter auth` again and paste the redirected URL promptly"
    )]
    CodeRefused(String),
    #[error(
        "Withings refused the redirect URI ({0}, redirect_uri_mismatch): WITHINGS_REDIRECT_URI must be exactly the callback URL registered for your application at developer.withings.com"
    )]
    RedirectMismatch(String),
    #[error(
        "Withings refused the client credentials ({0}): check WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET against your application at developer.withings.com"
    )]
    BadClient(String),
    #[error("exchanging the authorization code failed: {0}; run `withings-exporter auth` again")]
    Exchange(ApiError),
    #[error(
        "{0}; the authorization succeeded but could not be saved: fix that and run `withings-exporter auth` again"
    )]
    Store(StoreError),
    #[error("cannot read standard input: {0}")]
    Input(std::io::Error),
    #[error(
        "cannot create the token directory {path} ({cause}); create it yourself (mode 0700, writable by the user running `withings-exporter auth`), or point WITHINGS_TOKEN_DIR / WITHINGS_TOKEN_FILE at a writable place"
    )]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "Withings user {userid} is already the account {other:?}; nothing was saved. The browser was probably still signed in to Withings as that person: sign out of Withings (or use a private window), then run `withings-exporter auth --account {account}` again and sign in as the right person"
    )]
    SameUser {
        userid: String,
        other: String,
        account: String,
    },
    #[error(
        "account {account:?} belongs to Withings user {expected}, but Withings user {got} authorized; nothing was saved. Sign out of Withings and sign in as the right person, or pick a new account name for this person"
    )]
    OtherUser {
        account: String,
        expected: String,
        got: String,
    },
    #[error(
        "Withings did not say which user authorized, so the account cannot be checked against the others; nothing was saved: run `withings-exporter auth --account {0}` again"
    )]
    NoUserid(String),
}

/// One authorization attempt, with its own random `state`.
pub struct Authorization {
    settings: AuthSettings,
    state: String,
    client: WithingsClient,
}

impl Authorization {
    pub fn new(settings: AuthSettings) -> Result<Self, AuthError> {
        // `auth` spends the application's budget too: it counts its requests in the ledger
        // of the token directory it writes to, with the exporters and backfills there.
        let ledger = AccountsConfig {
            token_file: Some(settings.token_file.clone()),
            ..AccountsConfig::default()
        }
        .budget_ledger();
        let limits = Limits::shared(settings.requests_per_minute, Clock::default(), ledger);
        let client = WithingsClient::with_limits(
            &settings.api_url,
            settings.client.clone(),
            Arc::new(limits),
        )
        .map_err(AuthError::Exchange)?;
        Ok(Self {
            settings,
            state: random_state(),
            client,
        })
    }

    /// An authorization whose `state` is given (an invite's, issue 21) and whose requests
    /// go through `client` (the exporter's, with its budget).
    pub fn with_state(settings: AuthSettings, client: WithingsClient, state: &Secret) -> Self {
        Self {
            settings,
            state: state.expose().to_owned(),
            client,
        }
    }

    /// The page to send the user to.
    pub fn url(&self) -> Url {
        let mut url = self.settings.account_url.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/{AUTHORIZE_PATH}"));
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.credentials.client_id)
            .append_pair("scope", &self.settings.scopes)
            .append_pair("state", &self.state)
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str());
        url
    }

    pub fn token_file(&self) -> &std::path::Path {
        &self.settings.token_file
    }

    /// Creates the directory the token file goes in when it is missing: mode 0700, its
    /// missing parents too, said in one line. A fresh volume or state directory then needs
    /// no shell to prepare (the container image has none). Done before the URL is shown, so
    /// that a directory that cannot be made stops `auth` before the user signs in.
    pub fn create_token_dir(&self) -> Result<(), AuthError> {
        use std::os::unix::fs::DirBuilderExt;
        let Some(dir) = self
            .settings
            .token_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        else {
            return Ok(());
        };
        match std::fs::metadata(dir) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(cause) => {
                return Err(AuthError::CreateDir {
                    path: dir.to_path_buf(),
                    cause,
                });
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|cause| AuthError::CreateDir {
                path: dir.to_path_buf(),
                cause,
            })?;
        tracing::info!(path = %dir.display(), "created the token directory (mode 0700)");
        Ok(())
    }

    pub fn redirect_uri(&self) -> &Url {
        &self.settings.redirect_uri
    }

    /// Binds the redirect URI's host and port. Done before the URL is shown, so that the
    /// redirect cannot arrive before anyone listens. Port 0 takes any free port and puts it
    /// in the redirect URI (for tests: Withings only redirects to the registered URI).
    pub async fn listen(&mut self) -> Result<CallbackListener, AuthError> {
        if let Some(address) = self.settings.listen {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|cause| AuthError::Listen {
                    address: address.to_string(),
                    cause,
                })?;
            return Ok(CallbackListener { listener });
        }
        let uri = &self.settings.redirect_uri;
        let (Some(host), Some(port)) = (uri.host_str(), uri.port_or_known_default()) else {
            return Err(AuthError::CannotListen(uri.to_string()));
        };
        if uri.scheme() != "http" {
            return Err(AuthError::CannotListen(uri.to_string()));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let listener =
            TcpListener::bind((host, port))
                .await
                .map_err(|cause| AuthError::Listen {
                    address: format!("{host}:{port}"),
                    cause,
                })?;
        if port == 0 {
            let bound = listener.local_addr().map_err(|cause| AuthError::Listen {
                address: format!("{host}:{port}"),
                cause,
            })?;
            let _ = self.settings.redirect_uri.set_port(Some(bound.port()));
        }
        Ok(CallbackListener { listener })
    }

    /// Serves the redirect URI until the redirect carrying this run's `state` arrives (or
    /// `timeout` passes) and returns its code, or the error it carries. Requests with
    /// another state, or none, are answered and ignored. The browser is told "Authorized"
    /// before the code is exchanged: [`Self::receive_and_exchange`] tells it the outcome.
    pub async fn receive(
        &self,
        callback: CallbackListener,
        timeout: Duration,
    ) -> Result<Secret, AuthError> {
        self.serve_redirect(callback, timeout, false)
            .await
            .map(|(code, _)| code)
    }

    /// [`Self::receive`], then [`Self::exchange`], and only then the browser's page: it says
    /// "Authorized" only when the tokens were saved, and otherwise what the terminal says.
    pub async fn receive_and_exchange(
        &self,
        callback: CallbackListener,
        timeout: Duration,
    ) -> Result<StoredTokens, AuthError> {
        let (code, verdict) = self.serve_redirect(callback, timeout, true).await?;
        let result = self.exchange(&code).await;
        if let Some(verdict) = verdict {
            let _ = verdict.tell.send(match &result {
                Ok(tokens) => Ok(tokens.userid.clone()),
                Err(e) => Err(e.to_string()),
            });
            // The page goes out before the command ends (and the process with it); a browser
            // that stopped listening does not hold it up for long.
            let _ = tokio::time::timeout(Duration::from_secs(5), verdict.sent).await;
        }
        result
    }

    async fn serve_redirect(
        &self,
        callback: CallbackListener,
        timeout: Duration,
        wait_for_verdict: bool,
    ) -> Result<(Secret, Option<Verdict>), AuthError> {
        type Received = (Result<Secret, AuthError>, Option<Verdict>);
        let (tx, mut rx) = mpsc::channel::<Received>(1);
        let path = self.settings.redirect_uri.path().to_owned();
        let state = self.state.clone();
        let listener = callback.listener;
        let server = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors, say: pause rather than spin, then go on.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (tx, path, state) = (tx.clone(), path.clone(), state.clone());
                // Set when this connection carries the verdict page: told once it is sent.
                let sent: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>> =
                    Arc::default();
                let sent_by_connection = Arc::clone(&sent);
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let result = if req.uri().path() == path {
                            let params: HashMap<String, String> = req
                                .uri()
                                .query()
                                .map(|q| {
                                    url::form_urlencoded::parse(q.as_bytes())
                                        .into_owned()
                                        .collect()
                                })
                                .unwrap_or_default();
                            // Any page the user visits can send the browser here, with an
                            // error or a code of its own; only this run's state may end the
                            // wait, so anything else is ignored rather than taken as the
                            // answer.
                            if params.get("state").map(String::as_str) == Some(state.as_str()) {
                                Some(check_redirect(&params, &state))
                            } else {
                                tracing::warn!(
                                    with_error = params.contains_key("error"),
                                    "ignored a request to the redirect URI whose state does not match this run's (a stale browser tab or a forged request); still waiting"
                                );
                                None
                            }
                        } else {
                            None
                        };
                        let on_path = req.uri().path() == path;
                        let tx = tx.clone();
                        let sent = Arc::clone(&sent);
                        async move {
                            let response = match result {
                                None if on_path => page(
                                    StatusCode::BAD_REQUEST,
                                    "Ignored: this request's state does not match the authorization withings-exporter is waiting for. Use the URL it printed.",
                                ),
                                None => page(StatusCode::NOT_FOUND, "Not found."),
                                Some(Ok(code)) if wait_for_verdict => {
                                    let (tell, told) = tokio::sync::oneshot::channel();
                                    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
                                    *crate::lock::lock(&sent) = Some(sent_tx);
                                    let verdict = Verdict {
                                        tell,
                                        sent: sent_rx,
                                    };
                                    let _ = tx.try_send((Ok(code), Some(verdict)));
                                    let mut response = match told.await {
                                        Ok(Ok(userid)) => page(
                                            StatusCode::OK,
                                            &format!(
                                                "Authorized{}. The tokens are saved; you can close this window.",
                                                userid
                                                    .map(|u| format!(" as Withings user {u}"))
                                                    .unwrap_or_default()
                                            ),
                                        ),
                                        Ok(Err(e)) => page(
                                            StatusCode::BAD_REQUEST,
                                            &format!("Not authorized: {e}"),
                                        ),
                                        Err(_) => page(
                                            StatusCode::BAD_REQUEST,
                                            "Not authorized: withings-exporter stopped before saving; see its terminal.",
                                        ),
                                    };
                                    // Closed once sent, so that the command knows when.
                                    response.headers_mut().insert(
                                        hyper::header::CONNECTION,
                                        hyper::header::HeaderValue::from_static("close"),
                                    );
                                    response
                                }
                                Some(Ok(code)) => {
                                    let _ = tx.try_send((Ok(code), None));
                                    page(
                                        StatusCode::OK,
                                        "Authorized. You can close this window; withings-exporter is saving the tokens.",
                                    )
                                }
                                Some(Err(e)) => {
                                    let response = page(
                                        StatusCode::BAD_REQUEST,
                                        &format!("Authorization failed: {e}"),
                                    );
                                    let _ = tx.try_send((Err(e), None));
                                    response
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Some(sent) = crate::lock::lock(&sent_by_connection).take() {
                        let _ = sent.send(());
                    }
                });
            }
        });
        let outcome = tokio::time::timeout(timeout, rx.recv()).await;
        // The connection waiting for the verdict lives on its own task: stopping the
        // listener does not cut it.
        server.abort();
        match outcome {
            Ok(Some((result, verdict))) => result.map(|code| (code, verdict)),
            Ok(None) | Err(_) => Err(AuthError::Timeout(timeout)),
        }
    }

    /// Reads the redirected URL (or the bare code) the user pastes.
    pub async fn read_pasted<R: tokio::io::AsyncBufRead + Unpin>(
        &self,
        input: R,
    ) -> Result<Secret, AuthError> {
        let mut lines = input.lines();
        while let Some(line) = lines.next_line().await.map_err(AuthError::Input)? {
            let line = line.trim();
            if !line.is_empty() {
                return self.code_from_pasted(line);
            }
        }
        Err(AuthError::NoCode(
            "standard input ended before anything was pasted",
        ))
    }

    /// The code from a pasted redirected URL (state checked), query string, or bare code.
    pub fn code_from_pasted(&self, text: &str) -> Result<Secret, AuthError> {
        let query = match Url::parse(text) {
            Ok(url) => Some(url.query().unwrap_or("").to_owned()),
            Err(_) if text.contains('=') => Some(text.trim_start_matches('?').to_owned()),
            Err(_) => None,
        };
        match query {
            Some(query) => {
                let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                check_redirect(&params, &self.state)
            }
            // A bare code carries no state to check; the user copied it from the redirect
            // of this run's URL, the only place such a code comes from.
            None if text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)) =>
            {
                Ok(Secret::new(text))
            }
            None => Err(AuthError::NoCode(
                "the pasted text is neither a URL nor a code",
            )),
        }
    }

    /// Exchanges the code for a token pair and writes the token file.
    pub async fn exchange(&self, code: &Secret) -> Result<StoredTokens, AuthError> {
        // Before the request: the shared request ledger lives in that directory too.
        self.create_token_dir()?;
        let answer = self
            .client
            .request_token(&[
                ("grant_type", "authorization_code"),
                ("client_id", &self.settings.credentials.client_id),
                (
                    "client_secret",
                    self.settings.credentials.client_secret.expose(),
                ),
                ("code", code.expose()),
                ("redirect_uri", self.settings.redirect_uri.as_str()),
            ])
            .await
            .map_err(classify_exchange_error)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tokens = StoredTokens {
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
            expires_at: now.saturating_add(answer.expires_in),
            obtained_at: Some(now),
            userid: answer.userid,
            scope: answer.scope,
        };
        if let Some(account) = &self.settings.account {
            self.check_account(account, tokens.userid.as_deref())?;
        }
        // `auth` is the user asking for a new pair, so it replaces whatever file is there,
        // even one the exporter refused to read.
        TokenStore::new(&self.settings.token_file)
            .save(&tokens)
            .map_err(AuthError::Store)?;
        Ok(tokens)
    }
}

impl Authorization {
    /// One Withings user, one account: a user id that another account of the directory
    /// already has is the browser-still-signed-in trap, and an existing account is only
    /// re-authorized by its own user.
    fn check_account(&self, account: &str, userid: Option<&str>) -> Result<(), AuthError> {
        let userid = userid.ok_or_else(|| AuthError::NoUserid(account.to_owned()))?;
        let file = &self.settings.token_file;
        if let Ok(Some(existing)) = TokenStore::new(file).load()
            && let Some(expected) = existing.userid
            && expected != userid
        {
            return Err(AuthError::OtherUser {
                account: account.to_owned(),
                expected,
                got: userid.to_owned(),
            });
        }
        let Some(dir) = file.parent() else {
            return Ok(());
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut others: Vec<(String, std::path::PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_owned();
                (crate::app::accounts::valid_name(&name) && name != account)
                    .then(|| (name, e.path()))
            })
            .collect();
        others.sort();
        for (other, path) in others {
            if let Ok(Some(tokens)) = TokenStore::new(&path).load()
                && tokens.userid.as_deref() == Some(userid)
            {
                return Err(AuthError::SameUser {
                    userid: userid.to_owned(),
                    other,
                    account: account.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// What the browser waiting on the redirect is told once the code is exchanged: the
/// Withings user, or the terminal's error.
struct Verdict {
    tell: tokio::sync::oneshot::Sender<Result<Option<String>, String>>,
    /// Completes when the connection that carried the page has ended.
    sent: tokio::sync::oneshot::Receiver<()>,
}

/// The bound redirect listener.
pub struct CallbackListener {
    listener: TcpListener,
}

impl CallbackListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

fn check_redirect(
    params: &HashMap<String, String>,
    expected_state: &str,
) -> Result<Secret, AuthError> {
    if let Some(error) = params.get("error") {
        return Err(AuthError::Denied(error.clone()));
    }
    if params.get("state").map(String::as_str) != Some(expected_state) {
        return Err(AuthError::StateMismatch);
    }
    match params.get("code") {
        Some(code) if !code.is_empty() => Ok(Secret::new(code.as_str())),
        _ => Err(AuthError::NoCode("the redirect has no code parameter")),
    }
}

fn classify_exchange_error(e: ApiError) -> AuthError {
    let ApiError::Status { class, message, .. } = &e else {
        return AuthError::Exchange(e);
    };
    if !matches!(
        class,
        StatusClass::InvalidParams | StatusClass::Auth | StatusClass::Unauthorized
    ) {
        return AuthError::Exchange(e);
    }
    let text = message.to_ascii_lowercase();
    if text.contains("redirect_uri") {
        AuthError::RedirectMismatch(message.clone())
    } else if text.contains("client") {
        AuthError::BadClient(message.clone())
    } else if text.contains("code") {
        AuthError::CodeRefused(message.clone())
    } else {
        AuthError::Exchange(e)
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    crate::answer::answer(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>withings-exporter</title></head><body><p>{escaped}</p></body></html>\n"
        ),
    )
}

/// 128 random bits, hex: unguessable, so a forged redirect cannot match it.
fn random_state() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness is next to impossible on Linux; fall back to time and pid bits
        // rather than refuse to authorize.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            api_url: Url::parse("http://127.0.0.1:1/").unwrap(),
            account_url: Url::parse("https://account.withings.com").unwrap(),
            credentials: ClientCredentials {
                client_id: "cid".into(),
                client_secret: Secret::new("csecret"),
            },
            redirect_uri: Url::parse("http://127.0.0.1:19101/callback").unwrap(),
            token_file: PathBuf::from("/nonexistent/tokens.json"),
            client: ClientOptions::default(),
            listen: None,
            scopes: default_scopes(),
            account: None,
            requests_per_minute: crate::config::DEFAULT_PER_MINUTE,
        }
    }

    #[test]
    fn auth_spends_the_configured_budget_not_the_default() {
        let auth = Authorization::new(AuthSettings {
            requests_per_minute: 7,
            ..settings()
        })
        .unwrap();
        assert_eq!(auth.client.limits().budget.per_minute(), 7);
    }

    #[test]
    fn url_has_the_documented_parameters_and_no_secret() {
        let auth = Authorization::new(settings()).unwrap();
        let url = auth.url();
        assert_eq!(url.path(), "/oauth2_user/authorize2");
        let params: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], "cid");
        assert_eq!(params["scope"], "user.metrics");
        assert_eq!(params["redirect_uri"], "http://127.0.0.1:19101/callback");
        assert_eq!(params["state"].len(), 32);
        assert!(!url.as_str().contains("csecret"));
        let other = Authorization::new(settings()).unwrap();
        assert_ne!(auth.state, other.state, "state is random per run");
    }

    #[test]
    fn pasted_text_forms() {
        let auth = Authorization::new(settings()).unwrap();
        let state = auth.state.clone();
        let url = format!("http://127.0.0.1:19101/callback?code=abc-123&state={state}");
        assert_eq!(auth.code_from_pasted(&url).unwrap().expose(), "abc-123");
        assert_eq!(
            auth.code_from_pasted(&format!("code=abc&state={state}"))
                .unwrap()
                .expose(),
            "abc"
        );
        assert_eq!(
            auth.code_from_pasted("abc-123").unwrap().expose(),
            "abc-123"
        );
        let wrong = auth.code_from_pasted("http://127.0.0.1:19101/callback?code=abc&state=forged");
        assert!(matches!(wrong, Err(AuthError::StateMismatch)), "{wrong:?}");
        let denied =
            auth.code_from_pasted(&format!("http://x/cb?error=access_denied&state={state}"));
        assert!(matches!(denied, Err(AuthError::Denied(_))), "{denied:?}");
        assert!(matches!(
            auth.code_from_pasted("two words"),
            Err(AuthError::NoCode(_))
        ));
    }

    #[test]
    fn exchange_errors_are_told_apart() {
        let status = |message: &str| ApiError::Status {
            status: 503,
            class: StatusClass::InvalidParams,
            message: message.into(),
            wait_seconds: None,
        };
        assert!(matches!(
            classify_exchange_error(status("Invalid Params: redirect_uri_mismatch")),
            AuthError::RedirectMismatch(_)
        ));
        assert!(matches!(
            classify_exchange_error(status("Invalid Params: invalid client_id or client_secret")),
            AuthError::BadClient(_)
        ));
        assert!(matches!(
            classify_exchange_error(status("Invalid Params: invalid code")),
            AuthError::CodeRefused(_)
        ));
        assert!(matches!(
            classify_exchange_error(ApiError::Http {
                status: 502,
                url: "https://wbsapi.withings.net/v2/oauth2".into()
            }),
            AuthError::Exchange(_)
        ));
    }
}
