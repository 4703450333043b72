//! The Withings API as a transport: every request to Withings passes the client here, which
//! admits it only within the application's request budget ([`budget`]) and outside a 601
//! pause ([`ratelimit`]), so no path can bypass either; reads the envelope of every answer;
//! and pages and retries after an expired token ([`paging`]) for every reader. What each
//! endpoint's form and answer look like lives with its reader (a collector, `notify`).

pub mod budget;
mod client;
pub mod lenient;
pub mod model;
pub mod paging;
pub mod ratelimit;

pub use client::{
    ClientOptions, Limits, Request, WithingsClient, install_crypto_provider, parse_token,
};
pub(crate) use client::{row_as, success_body_as, success_status};
pub use model::TokenBody;
pub use paging::{KeptToken, RequestError, TokenError, TokenSupply, authorized};

use std::fmt;
use std::time::Duration;

/// What a body `status` means for the client (`withings-api.md`, "Envelope").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// The token is expired or invalid: refresh if possible, else report it invalid.
    Auth,
    /// The application or user lacks a grant: a re-authorization is needed.
    Unauthorized,
    /// The request was refused for its parameters; retrying it unchanged is pointless.
    InvalidParams,
    /// Withings timed out or is in a bad state: retry later.
    Transient,
    /// Too many requests: back off.
    RateLimited,
    NotImplemented,
    Unknown,
}

impl StatusClass {
    pub fn of(status: i64) -> Self {
        match status {
            100..=102 | 200 | 401 => Self::Auth,
            214 | 277 | 2553 | 2555 => Self::Unauthorized,
            522 | 524 => Self::Transient,
            601 => Self::RateLimited,
            2554 => Self::NotImplemented,
            201..=353 | 501..=511 => Self::InvalidParams,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for StatusClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auth => "authentication failed",
            Self::Unauthorized => "unauthorized",
            Self::InvalidParams => "invalid parameters",
            Self::Transient => "temporary failure",
            Self::RateLimited => "too many requests",
            Self::NotImplemented => "not implemented",
            Self::Unknown => "unknown status",
        })
    }
}

/// Why a call to Withings gave no usable answer. Messages never contain a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach Withings: {0}")]
    Transport(String),
    #[error("Withings did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Withings answered HTTP {status} for {url}")]
    Http { status: u16, url: String },
    /// Withings does not redirect, so a redirect is refused, not followed: it would send the
    /// request (a refresh token, the client secret) to another host.
    #[error(
        "Withings answered HTTP {status}, a redirect to {host}, which was not followed (Withings does not redirect; check WITHINGS_API_URL and any proxy in between)"
    )]
    Redirect { status: u16, host: String },
    #[error(
        "Withings' answer exceeds the {limit}-byte limit and was refused (raise WITHINGS_MAX_RESPONSE_BYTES if the account's history really is this large)"
    )]
    TooLarge { limit: usize },
    #[error("Withings' answer is not a valid {action} response: {detail}")]
    InvalidResponse {
        action: &'static str,
        detail: String,
    },
    /// Not sent: the application's request budget (`WITHINGS_REQUESTS_PER_MINUTE`) is spent.
    #[error(
        "not sent: the request budget of WITHINGS_REQUESTS_PER_MINUTE is spent for now (a slot frees in {0:.0?})"
    )]
    BudgetExhausted(Duration),
    /// Not sent: Withings answered 601 (too many requests) and its wait is not over.
    #[error(
        "not sent: Withings answered 601 (too many requests); no request is made for another {0:.0?}"
    )]
    Paused(Duration),
    #[error("Withings answered status {status} ({class}): {message}")]
    Status {
        status: i64,
        class: StatusClass,
        message: String,
        wait_seconds: Option<i64>,
    },
}

impl ApiError {
    /// Value of the `status` label on `withings_api_requests_total`.
    pub fn status_label(&self) -> String {
        match self {
            Self::Transport(_) => "transport_error".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Http { .. } | Self::Redirect { .. } => "http_error".into(),
            Self::TooLarge { .. } => "too_large".into(),
            Self::InvalidResponse { .. } => "invalid_response".into(),
            Self::Status { status, .. } => status.to_string(),
            Self::BudgetExhausted(_) => "budget_exhausted".into(),
            Self::Paused(_) => "rate_limited".into(),
        }
    }

    /// True when the request never left the exporter (budget or 601 pause): nothing was
    /// learnt about the token or the data, and nothing is to be retried in a hurry.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::BudgetExhausted(_) | Self::Paused(_))
    }

    pub fn class(&self) -> Option<StatusClass> {
        match self {
            Self::Status { class, .. } => Some(*class),
            _ => None,
        }
    }

    pub fn is_auth_failure(&self) -> bool {
        self.class() == Some(StatusClass::Auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_documented() {
        for s in [100, 101, 102, 200, 401] {
            assert_eq!(StatusClass::of(s), StatusClass::Auth, "{s}");
        }
        for s in [214, 277, 2553, 2555] {
            assert_eq!(StatusClass::of(s), StatusClass::Unauthorized, "{s}");
        }
        for s in [201, 213, 215, 276, 278, 293, 353, 501, 503, 511] {
            assert_eq!(StatusClass::of(s), StatusClass::InvalidParams, "{s}");
        }
        assert_eq!(StatusClass::of(522), StatusClass::Transient);
        assert_eq!(StatusClass::of(524), StatusClass::Transient);
        assert_eq!(StatusClass::of(601), StatusClass::RateLimited);
        assert_eq!(StatusClass::of(2554), StatusClass::NotImplemented);
        assert_eq!(StatusClass::of(999), StatusClass::Unknown);
    }
}
