//! EC2's older request signing, Signature Version 2 (the signature in the query, HMAC-SHA256),
//! which Libcloud's EC2 driver still sends by default in many regions (eu-west-1 among them):
//! checked as EC2 checks it, then turned into the SigV4-signed form request that moto's server
//! understands (moto tells the service by the SigV4 `Authorization` header, and has no EC2
//! route for a request without one).

use base64::Engine as _;
use nodeup::providers::ec2::api::{sigv4_headers, FORM_CONTENT_TYPE};

/// The parameters that sign a Version 2 request, not passed on.
const SIGNING_PARAMS: [&str; 4] = [
    "AWSAccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
];

/// The one method EC2 takes for Version 2.
const METHOD: &str = "HmacSHA256";

/// A refusal as EC2 words it: HTTP status, error code, message.
pub type Refusal = (u16, &'static str, String);

/// A checked Version 2 request: who sent it and what it asks, without the signing parameters.
#[derive(Debug)]
pub struct Checked {
    /// The access key id.
    pub key_id: String,
    /// The secret of that key.
    pub secret: String,
    /// The rest of the parameters, in their order.
    pub params: Vec<(String, String)>,
}

/// Whether `form` is signed with Version 2.
pub fn is_v2(form: &[(String, String)]) -> bool {
    form.iter()
        .any(|(k, v)| k == "SignatureVersion" && v == "2")
}

/// Checks the signature of a Version 2 request sent as `method` to `host` (the `Host` header's
/// value) and `path`, with the secrets `secret_of` knows.
///
/// # Errors
/// EC2's refusals: an unknown key (`AuthFailure`), a missing parameter, another method or a
/// wrong signature (`SignatureDoesNotMatch`).
pub fn check(
    method: &str,
    host: &str,
    path: &str,
    form: &[(String, String)],
    secret_of: impl Fn(&str) -> Option<String>,
) -> Result<Checked, Refusal> {
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(key_id), Some(signature)) = (get("AWSAccessKeyId"), get("Signature")) else {
        return Err((
            400,
            "MissingParameter",
            "The request must contain the parameter AWSAccessKeyId and Signature".into(),
        ));
    };
    if get("SignatureMethod") != Some(METHOD) {
        return Err((
            400,
            "InvalidParameterValue",
            format!("Value for parameter SignatureMethod is invalid: use {METHOD}"),
        ));
    }
    let Some(secret) = secret_of(key_id) else {
        return Err((
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials".into(),
        ));
    };
    let expected = signature_of(method, host, path, form, &secret);
    if expected != signature {
        return Err((
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .into(),
        ));
    }
    Ok(Checked {
        key_id: key_id.to_string(),
        secret,
        params: form
            .iter()
            .filter(|(k, _)| !SIGNING_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect(),
    })
}

/// The Version 2 signature: HMAC-SHA256 over the method, host, path and the parameters sorted by
/// name and percent-encoded as RFC 3986 says, base64.
fn signature_of(
    method: &str,
    host: &str,
    path: &str,
    form: &[(String, String)],
    secret: &str,
) -> String {
    let mut pairs: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!(
        "{method}\n{}\n{path}\n{}",
        host.to_ascii_lowercase(),
        query.join("&")
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, text.as_bytes()))
}

/// RFC 3986 percent-encoding: all but letters, digits and `-_.~`.
fn encode(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// The checked request as a form body and the headers that sign it with SigV4 for EC2 in
/// `region`, to POST to `url`.
///
/// # Errors
/// The signing library refuses (it should not).
pub fn resign(
    checked: &Checked,
    url: &str,
    region: &str,
) -> Result<(String, Vec<(String, String)>), String> {
    sign_v4_form(
        url,
        region,
        (&checked.key_id, &checked.secret),
        &checked.params,
    )
}

/// `params` as an EC2 form body and the headers to send it with (its content type, and the
/// SigV4 signature for EC2 in `region` with the key `(id, secret)`, made by nodeup's own
/// [`sigv4_headers`]), to POST to `url`.
///
/// # Errors
/// The signing library refuses (it should not).
pub fn sign_v4_form(
    url: &str,
    region: &str,
    (id, secret): (&str, &str),
    params: &[(String, String)],
) -> Result<(String, Vec<(String, String)>), String> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let credentials = aws_credential_types::Credentials::new(id, secret, None, None, "fake-ec2");
    let mut headers = vec![("content-type".to_string(), FORM_CONTENT_TYPE.to_string())];
    headers.extend(
        sigv4_headers(url, &body, &credentials, region)?
            .into_iter()
            .map(|h| (h.name, h.value)),
    );
    Ok((body, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's Signature Version 2 documentation, with its published signature.
    #[test]
    fn the_documented_example_signs_as_published() {
        let form: Vec<(String, String)> = [
            ("Action", "DescribeJobFlows"),
            ("Version", "2009-03-31"),
            ("AWSAccessKeyId", "AKIAIOSFODNN7EXAMPLE"),
            ("SignatureVersion", "2"),
            ("SignatureMethod", "HmacSHA256"),
            ("Timestamp", "2011-10-03T15:19:30"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let signature = signature_of(
            "GET",
            "elasticmapreduce.amazonaws.com",
            "/",
            &form,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(signature, "i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs=");
    }
}
