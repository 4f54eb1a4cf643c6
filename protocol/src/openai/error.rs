//! OpenAI's error body: every refused or failed request, and the last event of a stream that
//! failed after its headers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::response::Usage;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, …
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub param: Option<String>,
    /// OpenAI's code where OpenAI has one, infergate's failure label otherwise.
    pub code: Cow<'static, str>,
    /// What a non-streaming request had generated when its deadline cut it (504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialOutput>,
}

/// The text a request cut by its deadline had generated, and its token counts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PartialOutput {
    pub text: String,
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_error_body_is_openais_shape_and_partial_only_when_set() {
        let mut body = ErrorBody {
            error: ErrorDetail {
                message: "too late".into(),
                kind: "timeout_error".into(),
                param: None,
                code: "timeout".into(),
                partial: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            json!({"error": {"message": "too late", "type": "timeout_error", "param": null, "code": "timeout"}})
                .to_string()
        );
        body.error.partial = Some(PartialOutput { text: "ab".into(), usage: Usage::new(1, 2) });
        let text = serde_json::to_string(&body).unwrap();
        assert!(
            text.ends_with(
                r#""partial":{"text":"ab","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}}}"#
            ),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), body);
    }
}
