//! The faults the fake OVH API injects, and the counts of those that fired, so that a test can
//! assert that a fault it asked for really happened (a fault that silently stops firing would
//! otherwise let the test pass without testing anything).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What an injected fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 before doing anything.
    Error500,
    /// Answer 429 with this `Retry-After` (seconds) before doing anything.
    TooMany {
        /// The `Retry-After` value, in seconds.
        retry_after: u64,
    },
    /// Do the request, then lose the answer: the body breaks off after a few bytes.
    LoseAnswer,
    /// Do the request, then hold the answer this many milliseconds: the request stays in flight
    /// after what it made exists.
    SlowAnswer {
        /// How long the answer is held.
        millis: u64,
    },
}

/// A fault for the requests of one route: `method` and a path pattern matched against the end of
/// the request's path, segment by segment, `*` standing for any one segment (`/instance`,
/// `/instance/*`, `/dedicated/server/*/reinstall`). It fires for the next `times` matching
/// requests.
#[derive(Debug, Clone)]
pub struct RouteFault {
    /// GET, POST, PUT, DELETE.
    pub method: String,
    /// The path pattern.
    pub path: String,
    /// What happens.
    pub fault: Fault,
    /// How many more times it fires.
    pub times: u32,
}

impl RouteFault {
    /// A fault on `METHOD pattern` for the next `times` requests.
    pub fn new(method: &str, path: &str, fault: Fault, times: u32) -> Self {
        RouteFault {
            method: method.into(),
            path: path.into(),
            fault,
            times,
        }
    }

    /// Whether this fault applies to the request.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.times == 0 || !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let have: Vec<&str> = path.trim_matches('/').split('/').collect();
        have.len() >= want.len()
            && want
                .iter()
                .rev()
                .zip(have.iter().rev())
                .all(|(w, h)| *w == "*" || w == h)
    }
}

/// Faults the fake injects.
#[derive(Debug, Clone, Default)]
pub struct OvhFaults {
    /// The share (0 to 1) of authenticated requests answered 500, before anything is done.
    pub error_500: f64,
    /// The share answered 429 (with `Retry-After: 0`).
    pub error_429: f64,
    /// Every answer waits this long.
    pub slow: Duration,
    /// Faults on given routes, checked in order; the first that matches fires.
    pub routes: Vec<RouteFault>,
}

/// How many faults fired, by kind: what a test asserts after asking for faults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// 500 answers (shared and per route).
    pub error_500: u32,
    /// 429 answers (shared and per route).
    pub error_429: u32,
    /// Answers lost after the request was done (per route, and dropped create answers).
    pub lost_answers: u32,
    /// Answers held after the request was done.
    pub slow_answers: u32,
}

impl FaultCounts {
    /// Counts one fault of this kind.
    pub fn count(&mut self, fault: Fault) {
        match fault {
            Fault::Error500 => self.error_500 += 1,
            Fault::TooMany { .. } => self.error_429 += 1,
            Fault::LoseAnswer => self.lost_answers += 1,
            Fault::SlowAnswer { .. } => self.slow_answers += 1,
        }
    }
}

/// The answer OVH gives for a 500 or a 429 fault (`None` for a lost answer, which needs the real
/// answer first).
pub fn refusal(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Error500 => Some(super::ovh_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("INTERNAL_SERVER_ERROR"),
            "Internal server error",
        )),
        Fault::TooMany { retry_after } => {
            let mut response = super::ovh_error(
                StatusCode::TOO_MANY_REQUESTS,
                Some("TOO_MANY_REQUESTS"),
                "Too many requests",
            );
            if let Ok(value) = retry_after.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            Some(response)
        }
        Fault::LoseAnswer | Fault::SlowAnswer { .. } => None,
    }
}

/// The first of `routes` that matches the request, spent once; `None` when none does.
pub fn take(routes: &mut [RouteFault], method: &str, path: &str) -> Option<Fault> {
    let route = routes.iter_mut().find(|r| r.matches(method, path))?;
    route.times -= 1;
    Some(route.fault)
}

/// The answer as a fault that lets the request be done leaves it: lost (broken off after a few
/// bytes), held, or as it is.
pub async fn deliver(fault: Option<Fault>, answer: Response) -> Response {
    match fault {
        Some(Fault::LoseAnswer) => broken_answer(),
        Some(Fault::SlowAnswer { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            answer
        }
        _ => answer,
    }
}

/// An answer that breaks off: the status and a few bytes arrive, then the connection fails.
pub fn broken_answer() -> Response {
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":")),
        Err(std::io::Error::other("connection lost")),
    ]);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_end_of_the_path() {
        let f = RouteFault::new("DELETE", "/instance/*", Fault::LoseAnswer, 1);
        assert!(f.matches("DELETE", "/1.0/cloud/project/p/instance/abc"));
        assert!(!f.matches("GET", "/1.0/cloud/project/p/instance/abc"));
        assert!(!f.matches("DELETE", "/1.0/cloud/project/p/instance"));
        let g = RouteFault::new("POST", "/instance", Fault::Error500, 0);
        assert!(!g.matches("POST", "/1.0/cloud/project/p/instance"), "spent");
    }
}
