//! What every output does with one request: send it, count its status in
//! `at_forwarder_requests_total` (0 when nothing answered), and read what the endpoint
//! said — its status, `Retry-After`, a redirect's `Location`, and the start of a
//! non-2xx body for the log and the retry's reason.

use std::time::{Duration, SystemTime};

use crate::buffer::Outcome;
use crate::metrics::Metrics;

/// The body of an error answer kept for the reason, at most.
const MESSAGE_CHARS: usize = 512;

/// An endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, seconds or an HTTP date.
    pub retry_after: Option<Duration>,
    /// `Location` of a redirect (empty when none).
    pub location: String,
    /// The start of the body of a non-2xx answer.
    pub message: String,
}

/// Sends `request`; a transport failure is a retry, with the error and its causes.
pub async fn send(request: reqwest::RequestBuilder, metrics: &Metrics) -> Result<Answer, Outcome> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            metrics.request(0);
            return Err(Outcome::Retry {
                after: None,
                reason: format!("request failed: {}", error_chain(&e)),
            });
        }
    };
    let status = response.status().as_u16();
    metrics.request(status);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
    let location = header("location").unwrap_or_default();
    let message = if (200..300).contains(&status) {
        String::new()
    } else {
        let text = response.text().await.unwrap_or_default();
        text.chars().take(MESSAGE_CHARS).collect()
    };
    Ok(Answer {
        status,
        retry_after,
        location,
        message,
    })
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An error and its sources, for a retry's reason.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert!(
            parse_retry_after(&httpdate::fmt_http_date(
                SystemTime::now() + Duration::from_secs(30)
            ))
            .unwrap()
                > Duration::from_secs(25)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
