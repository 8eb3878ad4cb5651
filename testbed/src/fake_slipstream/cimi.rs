//! SlipStream's CIMI resources (`/api/...`, JSON), as its own client (`slipstream-api`, and the
//! Libcloud driver over it) uses them: the cloud entry point that names each collection,
//! searches by `PUT` with a form (`$filter`, `$first`, `$last`) or by `GET` with a query, sessions
//! (read, delete), service offers (the sizes) and virtual machines, and CIMI's `$filter`
//! expressions (`a/b = "x" and (c^='y' or d!=1)`).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{json_error, lock, Fake, CLOUDS};

/// The service offers of each cloud: (name, vCPUs, RAM in MB, disk in GB, price per hour).
const OFFERS: [(&str, u64, u64, u64, f64); 3] = [
    ("micro", 1, 512, 10, 0.01),
    ("small", 1, 2048, 20, 0.03),
    ("large", 4, 8192, 50, 0.15),
];

/// The country each cloud is in, as its service offers say.
fn country_of(cloud: &str) -> &'static str {
    if cloud.contains("-ch-") {
        "CH"
    } else {
        "IE"
    }
}

/// The id of a service offer: stable, so that a run form recorded once names it again.
pub(super) fn offer_id(cloud: &str, name: &str) -> String {
    let digest = cloud
        .bytes()
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!(
        "service-offer/{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        digest >> 32,
        (digest >> 16) & 0xffff,
        digest & 0xfff,
        (digest >> 4) & 0xfff,
        digest & 0xffff_ffff_ffff
    )
}

/// Every service offer, as CIMI documents.
pub(super) fn service_offers() -> Vec<Value> {
    CLOUDS
        .iter()
        .flat_map(|cloud| {
            OFFERS.iter().map(move |(name, cpu, ram, disk, price)| {
                json!({
                    "id": offer_id(cloud, name),
                    "resourceURI": "http://sixsq.com/slipstream/1/ServiceOffer",
                    "name": format!("{cloud} {name}"),
                    "description": format!("{cpu} vCPU, {ram} MB, {disk} GB on {cloud}"),
                    "created": "2019-03-01T10:00:00.000Z",
                    "updated": "2019-03-01T10:00:00.000Z",
                    "connector": {"href": cloud},
                    "resource:type": "VM",
                    "resource:class": "standard",
                    "resource:vcpu": cpu,
                    "resource:ram": ram,
                    "resource:disk": disk,
                    "resource:diskType": "SSD",
                    "resource:instanceType": name,
                    "resource:country": country_of(cloud),
                    "resource:platform": "openstack",
                    "resource:operatingSystem": "linux",
                    "price:unitCost": price,
                    "price:unitCode": "HUR",
                    "price:currency": "EUR",
                    "price:billingPeriodCode": "MIN",
                    "acl": acl(),
                })
            })
        })
        .collect()
}

fn acl() -> Value {
    json!({"owner": {"principal": "ADMIN", "type": "ROLE"},
           "rules": [{"principal": "USER", "type": "ROLE", "right": "VIEW"}]})
}

/// `GET /api/cloud-entry-point`: the base URI and where each collection is.
pub(super) fn cloud_entry_point(base: &str) -> Response {
    let collection = |href: &str| json!({"href": href});
    Json(json!({
        "id": "cloud-entry-point",
        "resourceURI": "http://schemas.dmtf.org/cimi/2/CloudEntryPoint",
        "created": "2019-03-01T10:00:00.000Z",
        "updated": "2019-03-01T10:00:00.000Z",
        "baseURI": format!("{base}/api/"),
        "acl": {"owner": {"principal": "ADMIN", "type": "ROLE"},
                "rules": [{"principal": "ANON", "type": "ROLE", "right": "VIEW"}]},
        "sessions": collection("session"),
        "sessionTemplates": collection("session-template"),
        "serviceOffers": collection("service-offer"),
        "virtualMachines": collection("virtual-machine"),
        "connectors": collection("connector"),
        "credentials": collection("credential"),
        "events": collection("event"),
        "users": collection("user"),
    }))
    .into_response()
}

/// The collections the fake serves: (the entry point's name, the resource href).
const COLLECTIONS: [(&str, &str); 5] = [
    ("sessions", "session"),
    ("serviceOffers", "service-offer"),
    ("virtualMachines", "virtual-machine"),
    ("connectors", "connector"),
    ("events", "event"),
];

/// A search of `collection` (`PUT` with its CIMI parameters as a form, or `GET` with them as a
/// query): the documents that pass `$filter`, from `$first` to `$last` (1-based).
pub(super) fn search(fake: &Fake, href: &str, params: &BTreeMap<String, String>) -> Response {
    let Some((name, _)) = COLLECTIONS.iter().find(|(_, h)| *h == href) else {
        return json_error(StatusCode::NOT_FOUND, &format!("{href} not found"));
    };
    let filter = match params.get("$filter").map(|f| Filter::parse(f)) {
        None => None,
        Some(Ok(filter)) => Some(filter),
        Some(Err(why)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid CIMI filter: {why}"),
            )
        }
    };
    let all = match href {
        "session" => sessions(fake),
        "service-offer" => service_offers(),
        "virtual-machine" => super::vm_documents(fake),
        "connector" => CLOUDS
            .iter()
            .map(|c| json!({"id": format!("connector/{c}"), "instanceName": c}))
            .collect(),
        _ => Vec::new(),
    };
    let matching: Vec<Value> = all
        .into_iter()
        .filter(|doc| filter.as_ref().is_none_or(|f| f.matches(doc)))
        .collect();
    let count = matching.len();
    let first = number(params, "$first").unwrap_or(1).max(1);
    let last = number(params, "$last").unwrap_or(count);
    let page: Vec<Value> = matching
        .into_iter()
        .skip(first - 1)
        .take((last + 1).saturating_sub(first))
        .collect();
    let kind = href
        .split('-')
        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
        .collect::<String>();
    Json(json!({
        "id": href,
        "resourceURI": format!("http://sixsq.com/slipstream/1/{kind}Collection"),
        "count": count,
        "acl": acl(),
        "operations": [{"rel": "add", "href": href}],
        (*name): page,
    }))
    .into_response()
}

fn number(params: &BTreeMap<String, String>, key: &str) -> Option<usize> {
    params.get(key).and_then(|v| v.trim().parse().ok())
}

/// The session of the request (the one its cookie names), as CIMI shows it.
fn sessions(fake: &Fake) -> Vec<Value> {
    let data = lock(&fake.data);
    data.session_ids
        .iter()
        .map(|id| {
            json!({"id": id, "username": fake.account.username, "method": "internal",
                   "resourceURI": "http://sixsq.com/slipstream/1/Session"})
        })
        .collect()
}

/// `GET /api/session/<id>`.
pub(super) fn session(fake: &Fake, id: &str) -> Response {
    let id = format!("session/{id}");
    match sessions(fake).into_iter().find(|s| s["id"] == id.as_str()) {
        Some(doc) => Json(doc).into_response(),
        None => json_error(StatusCode::NOT_FOUND, &format!("{id} not found")),
    }
}

/// `DELETE /api/session/<id>`: logs out.
pub(super) fn logout(fake: &Fake, id: &str) -> Response {
    let id = format!("session/{id}");
    let mut data = lock(&fake.data);
    let Some(at) = data.session_ids.iter().position(|s| *s == id) else {
        return json_error(StatusCode::NOT_FOUND, &format!("{id} not found"));
    };
    data.session_ids.remove(at);
    data.sessions.clear();
    Json(json!({"status": 200, "message": format!("{id} deleted"), "resource-id": id}))
        .into_response()
}

/// A CIMI filter: comparisons of attribute paths with values, under `and`, `or` and parentheses.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Filter {
    /// `path op value`.
    Compare(Vec<String>, Op, Value),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
}

/// A comparison of CIMI's filter grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `=`.
    Eq,
    /// `!=`.
    Ne,
    /// `^=`: starts with.
    Prefix,
}

impl Filter {
    /// Parses a filter; the error says where it stopped.
    pub(super) fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        let mut at = 0;
        let filter = or_expr(&tokens, &mut at)?;
        match tokens.get(at) {
            None => Ok(filter),
            Some(extra) => Err(format!("unexpected {extra:?}")),
        }
    }

    /// Whether `doc` passes.
    pub(super) fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(doc) && b.matches(doc),
            Filter::Or(a, b) => a.matches(doc) || b.matches(doc),
            Filter::Compare(path, op, wanted) => {
                let found = path.iter().try_fold(doc, |v, key| v.get(key.as_str()));
                let found = found.unwrap_or(&Value::Null);
                // Numbers compare by value (2048 and 2048.0 are one number).
                let same = match (found.as_f64(), wanted.as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => found == wanted,
                };
                match op {
                    Op::Eq => same,
                    Op::Ne => !same,
                    Op::Prefix => match (found.as_str(), wanted.as_str()) {
                        (Some(f), Some(w)) => f.starts_with(w),
                        _ => false,
                    },
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(Op),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(other) => s.push(other),
                        None => return Err("a quote without its end".into()),
                    }
                }
                tokens.push(Token::Text(s));
            }
            '=' => {
                chars.next();
                tokens.push(Token::Op(Op::Eq));
            }
            '!' | '^' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(format!("{c} without ="));
                }
                tokens.push(Token::Op(if c == '!' { Op::Ne } else { Op::Prefix }));
            }
            _ => {
                let mut word = String::new();
                while let Some(&w) = chars.peek() {
                    if w.is_alphanumeric() || "_:/-.".contains(w) {
                        word.push(w);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if word.is_empty() {
                    return Err(format!("unexpected {c:?}"));
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

fn or_expr(tokens: &[Token], at: &mut usize) -> Result<Filter, String> {
    let mut left = and_expr(tokens, at)?;
    while matches!(tokens.get(*at), Some(Token::Word(w)) if w == "or") {
        *at += 1;
        left = Filter::Or(Box::new(left), Box::new(and_expr(tokens, at)?));
    }
    Ok(left)
}

fn and_expr(tokens: &[Token], at: &mut usize) -> Result<Filter, String> {
    let mut left = term(tokens, at)?;
    while matches!(tokens.get(*at), Some(Token::Word(w)) if w == "and") {
        *at += 1;
        left = Filter::And(Box::new(left), Box::new(term(tokens, at)?));
    }
    Ok(left)
}

fn term(tokens: &[Token], at: &mut usize) -> Result<Filter, String> {
    match tokens.get(*at) {
        Some(Token::Open) => {
            *at += 1;
            let inner = or_expr(tokens, at)?;
            if tokens.get(*at) != Some(&Token::Close) {
                return Err("a ( without its )".into());
            }
            *at += 1;
            Ok(inner)
        }
        Some(Token::Word(attribute)) => {
            let Some(Token::Op(op)) = tokens.get(*at + 1) else {
                return Err(format!("{attribute} is not compared with anything"));
            };
            let value = match tokens.get(*at + 2) {
                Some(Token::Text(s)) => Value::String(s.clone()),
                Some(Token::Word(w)) if w == "null" => Value::Null,
                Some(Token::Word(w)) => w
                    .parse::<f64>()
                    .map(|n| json!(n))
                    .map_err(|_| format!("{w} is not a value"))?,
                _ => return Err(format!("{attribute} has no value to compare with")),
            };
            *at += 3;
            let path = attribute.split('/').map(str::to_string).collect();
            Ok(Filter::Compare(path, *op, value))
        }
        other => Err(format!("expected an attribute, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_the_seed_client_writes_them() {
        let offer = json!({"resource:type": "VM", "connector": {"href": "exoscale-ch-gva"},
                           "resource:ram": 2048});
        let pass = |f: &str| Filter::parse(f).unwrap().matches(&offer);
        assert!(pass(r#"resource:type="VM""#));
        assert!(pass(
            r#"resource:type="VM" and connector/href = "exoscale-ch-gva""#
        ));
        assert!(!pass(
            r#"resource:type="VM" and connector/href = "ec2-eu-west""#
        ));
        assert!(pass(
            "connector/href^='exo' and (resource:ram=2048 or resource:ram=1)"
        ));
        assert!(pass("resource:type!='disk'"));
        assert!(Filter::parse("resource:type=").is_err());
        assert!(Filter::parse("(a='b'").is_err());
    }

    #[test]
    fn offer_ids_are_stable_and_distinct() {
        assert_eq!(offer_id("a", "small"), offer_id("a", "small"));
        assert_ne!(offer_id("a", "small"), offer_id("b", "small"));
        assert!(offer_id("a", "small").starts_with("service-offer/"));
    }
}
