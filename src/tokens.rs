//! Where the access token for each Withings call comes from.

use crate::secret::Secret;

/// Why no usable access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no access token is available: {0}")]
    Unavailable(String),
}

/// The source of access tokens.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A fixed `WITHINGS_ACCESS_TOKEN`: never refreshed, so `withings_token_valid` falls to 0
    /// when Withings stops accepting it.
    Static(Secret),
}

impl TokenSource {
    /// The token to use for the next call.
    pub async fn access_token(&self) -> Result<Secret, TokenError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
        }
    }

    /// Called when Withings rejected `rejected` as expired or invalid. Returns a fresh token
    /// to retry with, or `None` when this source cannot produce one.
    pub async fn after_auth_failure(
        &self,
        _rejected: &Secret,
    ) -> Result<Option<Secret>, TokenError> {
        match self {
            Self::Static(_) => Ok(None),
        }
    }

    /// Unix time the current access token expires, when known.
    pub fn expiry(&self) -> Option<i64> {
        match self {
            Self::Static(_) => None,
        }
    }
}
