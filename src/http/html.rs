//! What the landing page and the onboarding pages (issue 21) share: escaping, the style,
//! the hardening headers and the page frame.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

/// Escapes text for HTML; account names are safe by their rule, error text is not.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The style of the onboarding and landing pages: readable at 375 px, high contrast.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:60rem;line-height:1.5;color:#111;background:#fff}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:1.5rem}button,input,select{font:inherit;padding:.4rem .6rem}button{background:#0b57d0;color:#fff;border:0;border-radius:4px;cursor:pointer}button.secondary{background:#444}input.link{width:100%;box-sizing:border-box}table{border-collapse:collapse;width:100%}.scroll{overflow-x:auto}td{overflow-wrap:anywhere}td,th{border:1px solid #999;padding:.3rem .5rem;text-align:left;vertical-align:top}.person{border:1px solid #999;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}.out{font-weight:bold;color:#a00000}.note{color:#333}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:bold}dd{margin:0}figure{margin:1rem 0}svg{max-width:100%;height:auto}@media (max-width:30rem){dl{grid-template-columns:1fr}}";

/// The Content-Security-Policy of the pages: no script at all, styles only from the page,
/// forms only to this exporter and, for the invite page whose button is redirected to
/// Withings, to `form_to` (an origin).
pub fn content_security_policy(form_to: Option<&str>) -> String {
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
        form_to.map(|o| format!(" {o}")).unwrap_or_default()
    )
}

/// The headers of every onboarding page and of the landing page: no `Referer` (an invite
/// link must not leak to Withings), no script, no framing, no caching.
pub fn harden(response: &mut Response<Full<Bytes>>) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(None)) {
        headers.insert(HeaderName::from_static("content-security-policy"), csp);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A small page: title, body (already HTML), the hardening headers.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} - Withings Exporter</title><style>{STYLE}</style></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut response = crate::answer::answer(status, "text/html; charset=utf-8", html);
    harden(&mut response);
    response
}

/// "2026-12-06 15:04 UTC".
pub fn unix_to_text(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}
