//! The simulated server: accepting connections and answering each endpoint as Withings
//! does (the measure and collector endpoints, the token endpoint, the faults a test asks for).

use super::*;

pub(crate) async fn serve(
    listener: TcpListener,
    inner: Arc<Mutex<Inner>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let inner = Arc::clone(&inner);
                let service = service_fn(move |req| {
                    let inner = Arc::clone(&inner);
                    async move {
                        let response = handle(&inner, req).await;
                        let sent = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0);
                        lock(&inner).response_bytes += sent;
                        Ok::<_, Infallible>(cut_if_asked(response))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stopped.changed() => return,
        }
    }
}

pub(crate) fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn handle(inner: &Mutex<Inner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let mut params = BTreeMap::new();
    if let Some(query) = parts.uri.query() {
        params.extend(url::form_urlencoded::parse(query.as_bytes()).into_owned());
    }
    let body = match Limited::new(body, 1 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request too large".into(),
            );
        }
    };
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let path = parts.uri.path().to_owned();
    lock(inner).requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        params: params.clone(),
        bearer: bearer.clone(),
        at: std::time::Instant::now(),
    });
    // Looked up only while someone is held: looking a token up marks it used.
    let any_held = !lock(inner).held_users.borrow().is_empty();
    let userid = bearer
        .as_deref()
        .filter(|_| any_held)
        .and_then(|t| lock(inner).user_of(t));
    if let Some(userid) = userid {
        let mut held = lock(inner).held_users.subscribe();
        let _ = held.wait_for(|users| !users.contains(&userid)).await;
    }
    match path.as_str() {
        "/measure" => measure(inner, &params, bearer.as_deref()).await,
        "/v2/oauth2" => token_endpoint(inner, &params).await,
        "/notify" => notify::endpoint(inner, &params, bearer.as_deref()).await,
        "/v2/measure" | "/v2/sleep" | "/v2/user" | "/v2/heart" => {
            collector_endpoint(inner, &path, &params, bearer.as_deref())
        }
        "/oauth2_user/authorize2" => {
            let mut guard = lock(inner);
            let now = guard.now_ms();
            let users: Vec<String> = guard.users.keys().cloned().collect();
            match guard.oauth.authorize(&params, now, &users) {
                oauth::Authorize::Redirect(location) => {
                    let mut response = reply(StatusCode::FOUND, "text/html", String::new());
                    if let Ok(value) = HeaderValue::from_str(&location) {
                        response
                            .headers_mut()
                            .insert(hyper::header::LOCATION, value);
                    }
                    response
                }
                oauth::Authorize::Page(html) => {
                    reply(StatusCode::OK, "text/html; charset=utf-8", html)
                }
                oauth::Authorize::ErrorPage(error) => reply(
                    StatusCode::BAD_REQUEST,
                    "text/html",
                    format!("<html><body><h1>Error</h1><p>{error}</p></body></html>"),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/html",
            "<html><body>Not Found</body></html>".into(),
        ),
    }
}

async fn measure(
    inner: &Mutex<Inner>,
    params: &BTreeMap<String, String>,
    bearer: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut held = lock(inner).hold.subscribe();
    // The sender lives in `inner`, as long as this request can; an error cannot happen.
    let _ = held.wait_for(|hold| !*hold).await;
    let fault = {
        let mut guard = lock(inner);
        guard.once.pop_front().or_else(|| guard.fault.clone())
    };
    match fault {
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(fault) => return fault_reply(fault),
        None => {}
    }
    let mut guard = lock(inner);
    let now = guard.clock.unwrap_or_else(unix_now);
    let Some(userid) = bearer.and_then(|t| guard.user_of(t)) else {
        return envelope_reply(EXPIRED_TOKEN_BODY.into());
    };
    let user = guard.user(&userid);
    if let Some((live, profile)) = user.live.as_mut() {
        let fresh = live.advance(now);
        let profile = *profile;
        user.groups.extend(
            fresh
                .into_iter()
                .filter_map(|g| profile.personalize(g))
                .filter_map(|g| StoredGroup::from_json(g).ok()),
        );
    }
    if params.get("action").map(String::as_str) != Some("getmeas") {
        return envelope_reply(
            json!({"status": 2554, "body": {}, "error": "Not implemented"}).to_string(),
        );
    }
    let int = |key: &str| data::int_param(params, key);
    let parsed = (|| -> Result<_, String> {
        let types: Option<Vec<i64>> = params
            .get("meastypes")
            .or_else(|| params.get("meastype"))
            .map(|list| {
                list.split(',')
                    .map(|t| {
                        t.trim()
                            .parse()
                            .map_err(|_| "Invalid Params: meastypes".to_owned())
                    })
                    .collect()
            })
            .transpose()?;
        let lastupdate = int("lastupdate")?;
        let range = (int("startdate")?, int("enddate")?);
        if lastupdate.is_some() && (range.0.is_some() || range.1.is_some()) {
            return Err(
                "Invalid Params: lastupdate cannot be used with startdate or enddate".into(),
            );
        }
        Ok((
            types,
            int("category")?.unwrap_or(1),
            lastupdate,
            range,
            int("offset")?.unwrap_or(0),
        ))
    })();
    let (types, category, lastupdate, (start, end), offset) = match parsed {
        Ok(p) => p,
        Err(error) => {
            return envelope_reply(json!({"status": 293, "body": {}, "error": error}).to_string());
        }
    };
    let page_size = guard.page_size;
    let timezone = guard.timezone.clone();
    let selected: Vec<Value> = guard
        .user(&userid)
        .groups
        .iter()
        .filter(|g| g.category == category)
        .filter(|g| lastupdate.is_none_or(|t| g.modified > t))
        .filter(|g| start.is_none_or(|s| g.date >= s) && end.is_none_or(|e| g.date <= e))
        .filter_map(|g| filter_measures(&g.json, types.as_deref()))
        .collect();
    let offset = usize::try_from(offset).unwrap_or(0).min(selected.len());
    let end = (offset + page_size).min(selected.len());
    let more = end < selected.len();
    let page: Vec<Value> = selected[offset..end].to_vec();
    let body = json!({
        "status": 0,
        "body": {
            "updatetime": now,
            "timezone": timezone,
            "measuregrps": page,
            "more": i64::from(more),
            "offset": if more { end as i64 } else { 0 },
        }
    });
    drop(guard);
    envelope_reply(body.to_string())
}

/// `getactivity`, `getsummary` and `getdevice`: the same envelope and token check as
/// `/measure`, then the scope check (status 277 "unauthorized": the reference does not say
/// which status Withings gives for a scope the user did not grant, and 277 is in its
/// unauthorized class).
fn collector_endpoint(
    inner: &Mutex<Inner>,
    path: &str,
    params: &BTreeMap<String, String>,
    bearer: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut guard = lock(inner);
    if let Some(fault) = guard.endpoint_faults.get(path).cloned() {
        drop(guard);
        return fault_reply(fault);
    }
    let Some((token, userid)) = bearer.and_then(|t| guard.user_of(t).map(|u| (t, u))) else {
        return envelope_reply(EXPIRED_TOKEN_BODY.into());
    };
    if let Some(scope) = data::scope_for(path).filter(|scope| {
        guard
            .denied_scopes
            .get(token)
            .is_some_and(|denied| denied.contains(*scope))
    }) {
        return envelope_reply(
            json!({
                "status": 277,
                "body": {},
                "error": format!("The access token was not granted the {scope} scope")
            })
            .to_string(),
        );
    }
    let now = guard.clock.unwrap_or_else(unix_now);
    let timezone = guard.timezone.clone();
    let page_size = guard.page_size;
    let user = guard.user(&userid);
    // A household member's data is made for the moment of the request, not kept: a
    // thousand members then hold their generators, not their last answers.
    let live;
    let extras = if user.live_extras {
        live = user.live_extras_at(now, &timezone);
        &live
    } else {
        &user.extras
    };
    let body = data::answer(extras, path, params, page_size, now);
    drop(guard);
    envelope_reply(body.to_string())
}

async fn token_endpoint(
    inner: &Mutex<Inner>,
    params: &BTreeMap<String, String>,
) -> Response<Full<Bytes>> {
    let mut held = lock(inner).token_hold.subscribe();
    // The sender lives in `inner`, as long as this request can; an error cannot happen.
    let _ = held.wait_for(|hold| !*hold).await;
    let fault = {
        let mut guard = lock(inner);
        guard
            .token_once
            .pop_front()
            .or_else(|| guard.token_fault.clone())
    };
    match fault {
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(fault) => return fault_reply(fault),
        None => {}
    }
    let mut guard = lock(inner);
    let now = guard.now_ms();
    let body = guard.oauth.token_endpoint(params, now);
    drop(guard);
    envelope_reply(body.to_string())
}

/// The group with only the requested types, or `None` if it has none of them.
fn filter_measures(group: &Value, types: Option<&[i64]>) -> Option<Value> {
    let Some(types) = types else {
        return Some(group.clone());
    };
    let measures: Vec<Value> = group["measures"]
        .as_array()?
        .iter()
        .filter(|m| m["type"].as_i64().is_some_and(|t| types.contains(&t)))
        .cloned()
        .collect();
    if measures.is_empty() {
        return None;
    }
    let mut group = group.clone();
    group["measures"] = Value::Array(measures);
    Some(group)
}

fn fault_reply(fault: Fault) -> Response<Full<Bytes>> {
    match fault {
        Fault::ExpiredToken => envelope_reply(EXPIRED_TOKEN_BODY.into()),
        Fault::Status {
            status,
            error,
            wait_seconds,
        } => {
            let mut body = json!({"status": status, "body": {}, "error": error});
            if let Some(wait) = wait_seconds {
                body["wait_seconds"] = json!(wait);
            }
            envelope_reply(body.to_string())
        }
        Fault::Http { status, body } => reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/html",
            body,
        ),
        Fault::Redirect { status, location } => {
            let mut response = reply(
                StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
                "text/html",
                String::new(),
            );
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, location);
            }
            response
        }
        Fault::Body(body) => envelope_reply(body),
        Fault::ResetMidBody(body) => {
            let mut response = envelope_reply(body);
            response.extensions_mut().insert(CutMidBody);
            response
        }
        Fault::Delay(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            String::new(),
        ),
    }
}

/// Marks a reply whose body is to be cut off halfway (`Fault::ResetMidBody`).
#[derive(Debug, Clone, Copy)]
struct CutMidBody;

/// A reply body as sent: whole, or cut off by an error, which makes hyper abort the
/// connection after the headers (with the full `content-length`) and the first half.
enum SimBody {
    Whole(Full<Bytes>),
    /// The first half still to send, whether it has been flushed (hyper flushes when the
    /// body is pending), and the whole body's length to announce.
    Cut(Option<Bytes>, bool, u64),
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset by the simulator (Fault::ResetMidBody)")]
struct Reset;

impl hyper::body::Body for SimBody {
    type Data = Bytes;
    type Error = Reset;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Reset>>> {
        match self.get_mut() {
            Self::Whole(full) => std::pin::Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            Self::Cut(half, flushed, _) => {
                if let Some(half) = half.take() {
                    return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(half))));
                }
                if !*flushed {
                    // Pending once, so that hyper writes out the half before the abort.
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                std::task::Poll::Ready(Some(Err(Reset)))
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Whole(full) => full.size_hint(),
            Self::Cut(_, _, announced) => hyper::body::SizeHint::with_exact(*announced),
        }
    }
}

fn cut_if_asked(response: Response<Full<Bytes>>) -> Response<SimBody> {
    let cut = response.extensions().get::<CutMidBody>().is_some();
    response.map(|body| {
        if !cut {
            return SimBody::Whole(body);
        }
        let whole = body.into_inner().unwrap_or_default();
        SimBody::Cut(
            Some(whole.slice(..whole.len() / 2)),
            false,
            whole.len() as u64,
        )
    })
}

pub(crate) fn envelope_reply(body: String) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, "application/json", body)
}

pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
