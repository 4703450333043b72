//! The one pager and the one retry every reader of Withings shares: the live sync of each
//! collector, the history backfill and the `notify` requests.
//!
//! Paging: Withings says `more` and the `offset` of the next page; an offset that does not
//! move forward, or more pages than a cap, is a broken upstream, not a history.
//!
//! Retry: an answer that says the access token expired (or is invalid) is asked again once
//! with a fresh token, when the token's source can make one. The source is the account's;
//! it is reached through [`TokenSupply`] so that this floor knows nothing of accounts.

use super::ApiError;
use crate::secret::Secret;
use std::future::Future;
use std::pin::Pin;

/// A sync (or one window of a backfill) that keeps saying `more` past this many pages is a
/// broken upstream, and is given up with an error. The largest real history seen is about
/// 2,000 measure groups, which Withings sends in one page; a yearly window of activity
/// (365 days, a few sources) or sleep is a page or two. 50 pages is well above anything a
/// real account holds, while a `more: true` that never ends (offset + 1 each time) costs at
/// most 50 requests a window instead of 10,000.
pub const MAX_PAGES: usize = 50;

/// A future a trait object can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a page said about the pages after it.
pub trait Paged {
    fn more(&self) -> bool;
    fn offset(&self) -> Option<i64>;
}

/// Where the paging of one sync or one history window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pager {
    offset: Option<i64>,
    pages: usize,
    cap: usize,
}

/// Withings kept answering `more` without moving forward, or past the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
pub struct EndlessPagination(pub usize);

impl Pager {
    /// A pager that gives up after `cap` pages.
    pub fn new(cap: usize) -> Self {
        Self {
            offset: None,
            pages: 0,
            cap,
        }
    }

    /// The `offset` of the next page to ask for; `None` for the first.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// Pages answered so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Notes a page's answer: `Ok(true)` when the next page is to be asked for (at
    /// [`Pager::offset`]), `Ok(false)` when that was the last one.
    pub fn turn(&mut self, more: bool, next: Option<i64>) -> Result<bool, EndlessPagination> {
        self.pages += 1;
        if !more {
            return Ok(false);
        }
        match next {
            Some(next) if self.offset.is_none_or(|o| next > o) && self.pages < self.cap => {
                self.offset = Some(next);
                Ok(true)
            }
            _ => Err(EndlessPagination(self.pages)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError<E> {
    #[error(transparent)]
    Fetch(E),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
}

/// Fetches every page, from `first` on (`None` for the start), following `more`/`offset`.
/// `fetch` asks for one page at an offset. The pages are returned in order, for the caller
/// to merge under its own lock: no lock is held across a request.
pub async fn all_pages<P, F, Fut, E>(
    first: Option<i64>,
    mut fetch: F,
) -> Result<Vec<P>, SyncError<E>>
where
    P: Paged,
    F: FnMut(Option<i64>) -> Fut,
    Fut: Future<Output = Result<P, E>>,
{
    let mut pager = Pager::new(MAX_PAGES);
    pager.offset = first;
    let mut pages = Vec::new();
    loop {
        let page = fetch(pager.offset()).await.map_err(SyncError::Fetch)?;
        let (more, next) = (page.more(), page.offset());
        pages.push(page);
        match pager.turn(more, next) {
            Ok(true) => {}
            Ok(false) => return Ok(pages),
            Err(EndlessPagination(n)) => return Err(SyncError::EndlessPagination(n)),
        }
    }
}

/// Why no usable access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no access token is available: {0}")]
    Unavailable(String),
    /// Withings refused the refresh token (or the client): only a new authorization helps.
    /// The instructions were logged once when it happened; this is repeated on every scrape.
    #[error("the refresh token was refused by Withings ({0}); a new authorization is needed")]
    ReauthorizationNeeded(String),
    /// A refresh failed for a reason that may pass; it is retried after a backoff.
    #[error("refreshing the access token failed ({0})")]
    RefreshFailed(String),
    /// A refreshed pair exists only in memory; it is not used until it is on disk.
    #[error("a refreshed token pair could not be saved, so it is not used yet: {0}")]
    NotSaved(String),
}

impl TokenError {
    /// True when retrying cannot help until the user authorizes again.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::ReauthorizationNeeded(_))
    }
}

/// Where the access token of a request comes from (an account's token source).
pub trait TokenSupply: Send + Sync {
    /// The token to use for the next request.
    fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>>;

    /// Withings rejected `rejected` as expired or invalid: a fresh token to retry with, or
    /// `None` when this source cannot make one (a fixed token).
    fn refreshed<'a>(
        &'a self,
        rejected: &'a Secret,
    ) -> BoxFuture<'a, Result<Option<Secret>, TokenError>>;
}

/// One token for every request of one fetch: the account's source is asked once (a lock and
/// a look at the token file each time), not once a request. A fetch lasts seconds and the
/// source hands out a token only while it has minutes left, so a kept copy does not expire
/// in between; should Withings still refuse it, the refresh goes to the source as before and
/// the fresh token is kept instead.
pub struct KeptToken<'a> {
    source: &'a dyn TokenSupply,
    kept: std::sync::Mutex<Option<Secret>>,
}

impl<'a> KeptToken<'a> {
    pub fn new(source: &'a dyn TokenSupply) -> Self {
        Self {
            source,
            kept: std::sync::Mutex::new(None),
        }
    }

    fn keep(&self, token: Option<Secret>) {
        // A poisoned lock only means another request panicked mid-assignment of an Option:
        // the value is whole either way.
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    fn kept(&self) -> Option<Secret> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl TokenSupply for KeptToken<'_> {
    fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>> {
        Box::pin(async move {
            if let Some(token) = self.kept() {
                return Ok(token);
            }
            let token = self.source.token().await?;
            self.keep(Some(token.clone()));
            Ok(token)
        })
    }

    fn refreshed<'b>(
        &'b self,
        rejected: &'b Secret,
    ) -> BoxFuture<'b, Result<Option<Secret>, TokenError>> {
        Box::pin(async move {
            let fresh = self.source.refreshed(rejected).await;
            // Whatever the refresh said, the rejected token is not handed out again.
            self.keep(fresh.as_ref().ok().cloned().flatten());
            fresh
        })
    }
}

/// Why an authorized request (or a sync of several) gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Api(ApiError),
    /// Withings rejected the token, and its source has no other (a fixed token).
    #[error(transparent)]
    Rejected(ApiError),
    /// No token could be had to begin with.
    #[error(transparent)]
    Token(TokenError),
    /// Withings rejected the token just now and refreshing it failed: whatever kept the
    /// refresh from helping, no valid token is at hand.
    #[error(transparent)]
    Refresh(TokenError),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
}

impl From<SyncError<RequestError>> for RequestError {
    fn from(e: SyncError<RequestError>) -> Self {
        match e {
            SyncError::Fetch(e) => e,
            SyncError::EndlessPagination(pages) => Self::EndlessPagination(pages),
        }
    }
}

impl From<EndlessPagination> for RequestError {
    fn from(EndlessPagination(pages): EndlessPagination) -> Self {
        Self::EndlessPagination(pages)
    }
}

/// One request made by `call` with a token from `tokens`, asked again once with a fresh
/// token if Withings says the first has expired.
pub async fn authorized<T, F, Fut>(tokens: &dyn TokenSupply, mut call: F) -> Result<T, RequestError>
where
    F: FnMut(Secret) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    // Asked of the supply for every request: whether a token is kept between requests is the
    // supply's choice (a fetch keeps one with `KeptToken`; the source itself refreshes the
    // pair before it expires, where a copy kept for longer would spend a request on a 401).
    let token = tokens.token().await.map_err(RequestError::Token)?;
    match call(token.clone()).await {
        Err(e) if e.is_auth_failure() => match tokens.refreshed(&token).await {
            Ok(Some(fresh)) => call(fresh).await.map_err(RequestError::Api),
            Ok(None) => Err(RequestError::Rejected(e)),
            Err(refresh) => Err(RequestError::Refresh(refresh)),
        },
        other => other.map_err(RequestError::Api),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Page(bool, Option<i64>);
    impl Paged for Page {
        fn more(&self) -> bool {
            self.0
        }
        fn offset(&self) -> Option<i64> {
            self.1
        }
    }

    #[tokio::test]
    async fn all_pages_follows_offsets_and_stops_a_loop() {
        let mut asked = Vec::new();
        let pages = all_pages(None, |offset| {
            asked.push(offset);
            let page = match offset {
                None => Page(true, Some(2)),
                Some(2) => Page(true, Some(4)),
                _ => Page(false, Some(0)),
            };
            async move { Ok::<_, ()>(page) }
        })
        .await
        .unwrap();
        assert_eq!(pages.len(), 3);
        assert_eq!(asked, [None, Some(2), Some(4)]);
        let stuck = all_pages(None, |_| async { Ok::<_, ()>(Page(true, Some(3))) }).await;
        assert_eq!(stuck.err(), Some(SyncError::EndlessPagination(2)));
        let failed = all_pages(None, |_| async { Err::<Page, _>("down") }).await;
        assert_eq!(failed.err(), Some(SyncError::Fetch("down")));
    }

    /// A source whose tokens are `t0`, `t1`...: each refresh makes the next, or fails.
    struct Tokens {
        issued: std::sync::Mutex<u32>,
        refresh: Result<bool, TokenError>,
        /// Times `token` was asked.
        asked: std::sync::atomic::AtomicU32,
    }

    impl Tokens {
        fn new(refresh: Result<bool, TokenError>) -> Self {
            Self {
                issued: std::sync::Mutex::new(0),
                refresh,
                asked: Default::default(),
            }
        }

        fn asked(&self) -> u32 {
            self.asked.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl TokenSupply for Tokens {
        fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let n = *self.issued.lock().unwrap();
            Box::pin(async move { Ok(Secret::new(format!("t{n}"))) })
        }
        fn refreshed<'a>(
            &'a self,
            _: &'a Secret,
        ) -> BoxFuture<'a, Result<Option<Secret>, TokenError>> {
            Box::pin(async move {
                match &self.refresh {
                    Ok(false) => Ok(None),
                    Ok(true) => {
                        let mut n = self.issued.lock().unwrap();
                        *n += 1;
                        Ok(Some(Secret::new(format!("t{n}"))))
                    }
                    Err(e) => Err(e.clone()),
                }
            })
        }
    }

    fn expired() -> ApiError {
        ApiError::Status {
            status: 401,
            class: super::super::StatusClass::Auth,
            message: "invalid_token".into(),
            wait_seconds: None,
        }
    }

    /// Calls `authorized` with a request that Withings answers `answer(token)`; returns the
    /// outcome and the tokens tried.
    async fn run(
        tokens: &dyn TokenSupply,
        answer: impl Fn(&str) -> Result<u8, ApiError>,
    ) -> (Result<u8, RequestError>, Vec<String>) {
        let tried = std::sync::Mutex::new(Vec::new());
        let outcome = authorized(tokens, |t: Secret| {
            tried.lock().unwrap().push(t.expose().to_owned());
            let answer = answer(t.expose());
            async move { answer }
        })
        .await;
        (outcome, tried.into_inner().unwrap())
    }

    #[tokio::test]
    async fn an_expired_token_is_refreshed_and_the_request_asked_again_once() {
        let tokens = Tokens::new(Ok(true));
        let (outcome, tried) =
            run(&tokens, |t| if t == "t0" { Err(expired()) } else { Ok(7) }).await;
        assert_eq!(outcome, Ok(7));
        assert_eq!(tried, ["t0", "t1"]);
        // Only once: a fresh token refused too is the answer.
        let (outcome, tried) = run(&tokens, |_| Err(expired())).await;
        assert_eq!(outcome, Err(RequestError::Api(expired())));
        assert_eq!(tried, ["t1", "t2"]);
        // Any other failure is not retried.
        let (outcome, tried) = run(&tokens, |_| Err(ApiError::Transport("down".into()))).await;
        assert_eq!(
            outcome,
            Err(RequestError::Api(ApiError::Transport("down".into())))
        );
        assert_eq!(tried.len(), 1);
    }

    #[tokio::test]
    async fn a_source_without_fresh_tokens_or_a_failed_refresh_says_which() {
        let fixed = Tokens::new(Ok(false));
        let (outcome, tried) = run(&fixed, |_| Err(expired())).await;
        assert_eq!(outcome, Err(RequestError::Rejected(expired())));
        assert_eq!(tried.len(), 1);
        let failing = Tokens::new(Err(TokenError::RefreshFailed("503".into())));
        let (outcome, _) = run(&failing, |_| Err(expired())).await;
        assert_eq!(
            outcome,
            Err(RequestError::Refresh(TokenError::RefreshFailed(
                "503".into()
            )))
        );
    }

    #[tokio::test]
    async fn a_kept_token_asks_its_source_once_a_fetch_and_keeps_the_refreshed_one() {
        let source = Tokens::new(Ok(true));
        let kept = KeptToken::new(&source);
        for _ in 0..3 {
            let (outcome, tried) = run(&kept, |_| Ok(1)).await;
            assert_eq!((outcome, tried), (Ok(1), vec!["t0".to_owned()]));
        }
        assert_eq!(source.asked(), 1);
        // Refused: the source refreshes, and the fresh token serves the rest of the fetch.
        let (outcome, tried) = run(&kept, |t| if t == "t0" { Err(expired()) } else { Ok(2) }).await;
        assert_eq!(
            (outcome, tried),
            (Ok(2), vec!["t0".to_owned(), "t1".to_owned()])
        );
        let (_, tried) = run(&kept, |_| Ok(3)).await;
        assert_eq!(tried, ["t1"]);
        assert_eq!(source.asked(), 1);
        // A refresh that failed leaves nothing kept: the next request asks the source again.
        let failing = Tokens::new(Err(TokenError::RefreshFailed("503".into())));
        let kept = KeptToken::new(&failing);
        let (outcome, _) = run(&kept, |_| Err(expired())).await;
        assert!(matches!(outcome, Err(RequestError::Refresh(_))));
        run(&kept, |_| Ok(4)).await.0.unwrap();
        assert_eq!(failing.asked(), 2);
    }

    #[test]
    fn the_pager_stops_at_its_cap() {
        let mut pager = Pager::new(3);
        assert_eq!(pager.turn(true, Some(1)), Ok(true));
        assert_eq!(pager.turn(true, Some(2)), Ok(true));
        assert_eq!(pager.turn(true, Some(3)), Err(EndlessPagination(3)));
        let mut pager = Pager::new(3);
        assert_eq!(pager.turn(true, None), Err(EndlessPagination(1)));
        let mut pager = Pager::new(3);
        assert_eq!(pager.turn(false, None), Ok(false));
    }
}
