//! The integrator's side of a verification, for the load and fault tools: a session, the embedded
//! edge's attestation of a selfie and a document photo, the media upload body; and latency
//! percentiles.

use serde_json::{Value, json};

use crate::http;

const BOUNDARY: &str = "idyntra-flow-boundary";

/// A `multipart/form-data` body of named file parts.
pub fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Posts a [`multipart`] body with a bearer token.
pub async fn post_form(
    url: String,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    http()
        .post(url)
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
}

/// A passive session of the server at `base`, attested by its embedded edge and ready to upload:
/// its id, client token and upload body.
pub async fn attested(
    base: &str,
    key: &str,
    selfie: &[u8],
    document: &[u8],
) -> Result<(String, String, Vec<u8>), String> {
    let session = http()
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(key)
        .json(&json!({"options": {"liveness": "passive"}}))
        .send()
        .await
        .map_err(|error| format!("create: {error}"))?;
    if session.status() != 201 {
        return Err(format!("create: {}", session.status()));
    }
    let session: Value = session.json().await.map_err(|error| error.to_string())?;
    let id = session["id"].as_str().unwrap_or_default().to_owned();
    let token = session["client_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let answer = post_form(
        format!("{base}/v1/attest"),
        &token,
        multipart(&[("selfie", selfie), ("document", document)]),
    )
    .await
    .map_err(|error| format!("attest: {error}"))?;
    if answer.status() != 200 {
        return Err(format!(
            "attest: {} {}",
            answer.status(),
            answer.text().await.unwrap_or_default()
        ));
    }
    let answer: Value = answer.json().await.map_err(|error| error.to_string())?;
    let attestation = answer["attestation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = multipart(&[
        ("attestation", attestation.as_bytes()),
        ("selfie", selfie),
        ("document", document),
    ]);
    Ok((id, token, body))
}

/// The `p`th percentile (nearest rank) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert_eq!(percentile(&[], 95.0), 0.0);
    }
}
