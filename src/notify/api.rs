//! The `notify` endpoints of Withings (`{api}/notify`): `list`, `subscribe` and `revoke`,
//! their forms and their answers. Every request passes the Withings client, and a token
//! Withings says has expired is refreshed and the request asked again once.

use crate::secret::Secret;
use crate::withings::{ApiError, Request, RequestError, TokenSupply, WithingsClient, authorized};
use serde::Deserialize;

const PATH: &str = "notify";

/// One subscription as `notify list` gives it. `Debug` hides the callback URL: ours holds
/// the secret.
#[derive(Clone, Deserialize)]
pub struct Subscription {
    #[serde(deserialize_with = "crate::withings::lenient::int")]
    pub appli: i64,
    #[serde(default)]
    pub callbackurl: String,
    #[serde(default, deserialize_with = "crate::withings::lenient::opt_string")]
    pub comment: Option<String>,
    #[serde(default, deserialize_with = "crate::withings::lenient::opt_int")]
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("appli", &self.appli)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A `notify list` answer. A malformed profile is skipped, not fatal (as in getmeas).
pub fn parse_list(body: &[u8]) -> Result<Vec<Subscription>, ApiError> {
    const ACTION: &str = "notify_list";
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        profiles: Vec<serde_json::Value>,
    }
    let parsed: Body = crate::withings::success_body_as(ACTION, body)?;
    Ok(parsed
        .profiles
        .into_iter()
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect())
}

/// A `subscribe` or `revoke` answer: status 0 is all it says.
pub fn parse_ack(body: &[u8]) -> Result<(), ApiError> {
    crate::withings::success_status("notify", body)
}

/// `notify list`: the user's subscriptions.
pub fn list_request() -> Request {
    Request {
        path: PATH,
        action: "notify_list",
        form: vec![("action", "list".to_owned())],
    }
}

/// `notify subscribe`: Withings checks `callback` with a HEAD before it answers. The
/// callback URL holds our secret: it goes in the form body, never in a URL.
pub fn subscribe_request(callback: &Secret, appli: i64, comment: &str) -> Request {
    Request {
        path: PATH,
        action: "notify_subscribe",
        form: vec![("action", "subscribe".to_owned())],
    }
    .field("callbackurl", callback.expose())
    .field("appli", appli)
    .field("comment", comment)
}

/// `notify revoke` of one subscription.
pub fn revoke_request(callback: &Secret, appli: i64) -> Request {
    Request {
        path: PATH,
        action: "notify_revoke",
        form: vec![("action", "revoke".to_owned())],
    }
    .field("callbackurl", callback.expose())
    .field("appli", appli)
}

/// The account's subscriptions.
pub async fn list(
    client: &WithingsClient,
    tokens: &dyn TokenSupply,
) -> Result<Vec<Subscription>, RequestError> {
    let request = list_request();
    let request = &request;
    authorized(tokens, |t| async move {
        client.call(&t, request, parse_list).await
    })
    .await
}

/// Subscribes the account to `appli` at `callback`.
pub async fn subscribe(
    client: &WithingsClient,
    tokens: &dyn TokenSupply,
    callback: &Secret,
    appli: i64,
    comment: &str,
) -> Result<(), RequestError> {
    let request = subscribe_request(callback, appli, comment);
    let request = &request;
    authorized(tokens, |t| async move {
        client.call(&t, request, parse_ack).await
    })
    .await
}

/// Revokes the account's subscription to `appli` at `callback`.
pub async fn revoke(
    client: &WithingsClient,
    tokens: &dyn TokenSupply,
    callback: &Secret,
    appli: i64,
) -> Result<(), RequestError> {
    let request = revoke_request(callback, appli);
    let request = &request;
    authorized(tokens, |t| async move {
        client.call(&t, request, parse_ack).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_its_status_with_or_without_a_body() {
        assert_eq!(parse_ack(br#"{"status":0}"#), Ok(()));
        assert_eq!(parse_ack(br#"{"status":0,"body":{}}"#), Ok(()));
        let refused = parse_ack(br#"{"status":293,"error":"callback unreachable"}"#);
        assert!(
            matches!(&refused, Err(ApiError::Status { status: 293, .. })),
            "{refused:?}"
        );
        assert!(parse_ack(b"<html>").is_err());
    }

    #[test]
    fn the_callback_goes_in_the_form_and_never_in_debug() {
        let secret = Secret::new("https://example.org/withings/notify/sekrit");
        let request = subscribe_request(&secret, 44, "withings-exporter");
        assert_eq!(request.path, "notify");
        assert_eq!(request.action, "notify_subscribe");
        assert!(request.form.contains(&("action", "subscribe".to_owned())));
        assert!(
            request
                .form
                .contains(&("callbackurl", secret.expose().to_owned()))
        );
        assert!(request.form.contains(&("appli", "44".to_owned())));
        assert!(!format!("{request:?}").contains("sekrit"));
        let revoke = revoke_request(&secret, 1);
        assert_eq!(revoke.action, "notify_revoke");
        assert!(!format!("{revoke:?}").contains("sekrit"));
        assert_eq!(list_request().form, [("action", "list".to_owned())]);
    }
}
