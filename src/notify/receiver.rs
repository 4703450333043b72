//! The notification path: `HEAD` for Withings' check at `subscribe`, `POST` for a
//! notification. Answered at once; the fetch, if any, starts in a task of its own.
//!
//! Withings cannot send credentials, so this path is exempt from basic auth: the secret in
//! it is the only protection. Every refusal is counted, none fetches, and the path is never
//! logged as is.

use super::Notifier;
use crate::app::App;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    crate::answer::answer(status, "text/plain; charset=utf-8", body)
}

/// Whether `path` belongs to the notification path (the server routes it here, before
/// basic auth).
pub fn owns(app: &App, path: &str) -> bool {
    app.notifier().is_some_and(|n| n.callback().owns(path))
}

/// Answers one request on the notification path; a body that has not all arrived within
/// `body_deadline` is answered 408 and counted as malformed.
pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    body_deadline: std::time::Duration,
) -> Response<Full<Bytes>> {
    let Some(n) = app.notifier() else {
        return answer(StatusCode::NOT_FOUND, "Not found\n");
    };
    if !n.callback().matches(req.uri().path()) {
        n.count(None, "wrong_secret");
        tracing::debug!(
            path = %n.callback().redacted_path(),
            "request on the notification path with a wrong secret refused"
        );
        return answer(StatusCode::NOT_FOUND, "Not found\n");
    }
    match *req.method() {
        Method::HEAD => {
            n.count(None, "head");
            return answer(StatusCode::OK, "");
        }
        Method::POST => {}
        _ => {
            n.count(None, "wrong_method");
            let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, "Use POST\n");
            response.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("HEAD, POST"),
            );
            return response;
        }
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > super::MAX_BODY_BYTES as u64) {
        n.count(None, "too_large");
        return answer(StatusCode::PAYLOAD_TOO_LARGE, "Too large\n");
    }
    let collect = Limited::new(req.into_body(), super::MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(body_deadline, collect).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            n.count(None, "too_large");
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "Too large\n");
        }
        Err(_) => {
            // A body sent a byte at a time holds a connection: cut off, and the connection
            // closed, so that it does not stay busy.
            n.count(None, "malformed");
            tracing::debug!(
                path = %n.callback().redacted_path(),
                "notification body not received within {body_deadline:?}; refused"
            );
            let mut response = answer(StatusCode::REQUEST_TIMEOUT, "Body too slow\n");
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    notification(app, n, &body)
}

/// What a notification form says, before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct Form {
    pub userid: String,
    pub appli: i64,
}

/// `userid` (digits) and `appli` (an integer); `startdate`, `enddate` and unknown fields are
/// not needed: the fetch asks Withings what changed.
pub fn parse_form(body: &[u8]) -> Result<Form, Option<i64>> {
    let mut userid = None;
    let mut appli = None;
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "userid" => userid = Some(value.into_owned()),
            "appli" => appli = value.trim().parse::<i64>().ok(),
            _ => {}
        }
    }
    let userid =
        userid.filter(|u| !u.is_empty() && u.len() <= 20 && u.bytes().all(|b| b.is_ascii_digit()));
    match (userid, appli) {
        (Some(userid), Some(appli)) => Ok(Form { userid, appli }),
        (_, appli) => Err(appli),
    }
}

fn notification(app: &Arc<App>, n: &Notifier, body: &[u8]) -> Response<Full<Bytes>> {
    let form = match parse_form(body) {
        Ok(form) => form,
        Err(appli) => {
            n.count(appli, "malformed");
            return answer(StatusCode::BAD_REQUEST, "Malformed notification\n");
        }
    };
    // 200 for what we cannot use: an error would only have Withings retry it for hours.
    if !n.settings().applis.contains(&form.appli) {
        n.count(Some(form.appli), "ignored_appli");
        return answer(StatusCode::OK, "");
    }
    let Some(account) = super::account_for_userid(app, &form.userid) else {
        n.count(Some(form.appli), "unknown_userid");
        return answer(StatusCode::OK, "");
    };
    if n.schedule().notified(account.name(), form.appli) {
        n.count(Some(form.appli), "accepted");
    } else {
        n.count(Some(form.appli), "coalesced");
    }
    super::trigger_due(app);
    answer(StatusCode::OK, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_tolerantly_and_refused_when_unusable() {
        assert_eq!(
            parse_form(b"userid=1002&appli=1&startdate=1&enddate=2&extra=x"),
            Ok(Form {
                userid: "1002".into(),
                appli: 1
            })
        );
        assert_eq!(parse_form(b"appli=4"), Err(Some(4)));
        assert_eq!(parse_form(b"userid=abc&appli=4"), Err(Some(4)));
        assert_eq!(parse_form(b"userid=1&appli=x"), Err(None));
        assert_eq!(parse_form(b"\xff\xfe"), Err(None));
    }
}
