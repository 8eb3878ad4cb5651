//! The fake's front door: every request's application key, consumer key, timestamp and signature
//! (checked with a signer of its own), the faults it injects, the query id; `/auth/time` and
//! `/auth/credential`.

use super::*;

/// Authentication, faults and the query id, around every route.
pub(super) async fn check(State(fake): State<Shared>, request: Request, next: Next) -> Response {
    let query_id = format!(
        "FR.ws-{}.{}",
        rand::rng().random_range(1..9),
        random_hex(16)
    );
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return with_query_id(bad_request("body too large"), &query_id);
    };
    let path = parts.uri.path().to_string();
    let public = path == "/1.0/auth/time" || path == "/1.0/auth/credential";
    let faults = fake
        .config
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .faults
        .clone();
    if !faults.slow.is_zero() {
        tokio::time::sleep(faults.slow).await;
    }
    let app = parts
        .headers
        .get("x-ovh-application")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if app != fake.account.application_key {
        return with_query_id(
            ovh_error(
                StatusCode::FORBIDDEN,
                Some("INVALID_KEY"),
                "Invalid application key",
            ),
            &query_id,
        );
    }
    if !public {
        if let Err(response) =
            check_signature(&fake, &parts.method, &parts.headers, &parts.uri, &bytes)
        {
            return with_query_id(response, &query_id);
        }
        let fault = pick_fault(&fake, parts.method.as_str(), &path, &faults);
        if let Some(fault) = fault {
            fake.data
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fired
                .count(fault);
            if let Some(refused) = faults::refusal(fault) {
                return with_query_id(refused, &query_id);
            }
        }
        if fault == Some(Fault::LoseAnswer) {
            fake.data.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
            let request = Request::from_parts(parts, Body::from(bytes));
            let _done = next.run(request).await;
            return with_query_id(faults::broken_answer(), &query_id);
        }
        if let Some(Fault::SlowAnswer { millis }) = fault {
            fake.data.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
            let request = Request::from_parts(parts, Body::from(bytes));
            let answer = next.run(request).await;
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            return with_query_id(answer, &query_id);
        }
        fake.data.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    with_query_id(next.run(request).await, &query_id)
}

/// The fault for this request: the first route fault that matches (spent once used), else the
/// shared 500 and 429 shares.
pub(super) fn pick_fault(
    fake: &Fake,
    method: &str,
    path: &str,
    faults: &OvhFaults,
) -> Option<Fault> {
    {
        let mut config = fake.config.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fault) = faults::take(&mut config.faults.routes, method, path) {
            return Some(fault);
        }
    }
    let mut rng = fake.rng.lock().unwrap_or_else(|e| e.into_inner());
    let roll: f64 = rng.random();
    if roll < faults.error_500 {
        Some(Fault::Error500)
    } else if roll < faults.error_500 + faults.error_429 {
        Some(Fault::TooMany { retry_after: 0 })
    } else {
        None
    }
}

pub(super) fn with_query_id(mut response: Response, query_id: &str) -> Response {
    if let Ok(value) = query_id.parse() {
        response.headers_mut().insert("x-ovh-queryid", value);
    }
    response
}

pub(super) fn check_signature(
    fake: &Fake,
    method: &Method,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &Bytes,
) -> Result<(), Response> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let consumer = header("x-ovh-consumer");
    if consumer.is_empty() {
        return Err(ovh_error(
            StatusCode::UNAUTHORIZED,
            None,
            "You must login first",
        ));
    }
    if consumer != fake.account.consumer_key {
        return Err(ovh_error(
            StatusCode::FORBIDDEN,
            Some("INVALID_CREDENTIAL"),
            "This credential is not valid",
        ));
    }
    let offset = fake
        .config
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clock_offset;
    let server_now = now_secs() + offset;
    let Ok(timestamp) = header("x-ovh-timestamp").parse::<i64>() else {
        return Err(ovh_error(
            StatusCode::BAD_REQUEST,
            Some("QUERY_TIME_OUT"),
            "Query out of time",
        ));
    };
    if (timestamp - server_now).abs() > 30 {
        return Err(ovh_error(
            StatusCode::BAD_REQUEST,
            Some("QUERY_TIME_OUT"),
            "Query out of time",
        ));
    }
    // The raw URL as received: scheme and host, then the path and query exactly as sent.
    let host = header("host");
    let raw = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{host}{raw}");
    let expected = expected_signature(
        &fake.account.application_secret,
        consumer,
        method.as_str(),
        &url,
        body,
        timestamp,
    );
    if header("x-ovh-signature") != expected {
        return Err(ovh_error(
            StatusCode::BAD_REQUEST,
            Some("INVALID_SIGNATURE"),
            "Invalid signature",
        ));
    }
    Ok(())
}

/// The signature OVH expects, computed here on its own (not with nodeup's signing code, which is
/// what the fake checks): SHA-1 over the `+`-joined pre-image, as OVH documents it.
pub(super) fn expected_signature(
    secret: &str,
    consumer: &str,
    method: &str,
    url: &str,
    body: &[u8],
    timestamp: i64,
) -> String {
    use sha1::Digest;
    let mut preimage = format!("{secret}+{consumer}+{method}+{url}+").into_bytes();
    preimage.extend_from_slice(body);
    preimage.extend_from_slice(format!("+{timestamp}").as_bytes());
    let digest = sha1::Sha1::digest(&preimage);
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    format!("$1${hex}")
}

pub(super) async fn auth_time(State(fake): State<Shared>) -> Json<i64> {
    let offset = fake
        .config
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clock_offset;
    Json(now_secs() + offset)
}

pub(super) async fn auth_credential(State(fake): State<Shared>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON");
    };
    if !request.get("accessRules").is_some_and(Value::is_array) {
        return bad_request("Missing parameter accessRules");
    }
    fake.data
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .credential_requests
        .push(request.clone());
    let token = random_token(32);
    Json(json!({
        "validationUrl": format!("http://fake-ovh/auth/?credentialToken={token}"),
        "consumerKey": fake.account.consumer_key,
        "state": "pendingValidation",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::expected_signature;

    /// python-ovh's known-answer vectors (its test suite, test_client.py).
    #[test]
    fn the_fakes_signature_matches_ovhs_own_clients() {
        let secret = "9ufkBmLaTQ9nz5yMUlg79taH0GNnzDjk";
        let consumer = "5mBuy6SUQcRw2ZUxg0cG68BoDKpED4KY";
        let url = "https://eu.api.ovh.com/1.0/auth";
        assert_eq!(
            expected_signature(secret, consumer, "GET", url, b"", 1457018875),
            "$1$e9556054b6309771395efa467c22e627407461ad"
        );
        assert_eq!(
            expected_signature(
                secret,
                consumer,
                "POST",
                url,
                br#"{"a":"b","c":"d"}"#,
                1457018875
            ),
            "$1$ec2fb5c7a81f64723c77d2e5b609ae6f58a84fc1"
        );
    }
}
