//! Message templates: the Liquid sources of every part of one channel kind's message, checked
//! together when saved and rendered together at send time.
//!
//! ```
//! use cohort_journey::template::message::{MessageTemplate, RenderedMessage, MessageParts};
//! use serde_json::json;
//!
//! let template = MessageTemplate::from_value(&json!({
//!     "kind": "sms",
//!     "body": "{{ first_name | default: \"顾客\" }}，您的验证码是 {{ event.code }}",
//! }))?;
//! let compiled = template.compile()?;
//! let zone = "Asia/Shanghai".parse().unwrap();
//! let data = json!({"customer": {}, "event": {"code": "4821"}});
//! let RenderedMessage::Message(MessageParts::Sms { text, .. }) = compiled.render(&data, zone, None)? else {
//!     panic!("not an SMS");
//! };
//! assert_eq!(text, "顾客，您的验证码是 4821");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parts by kind:
//!
//! - `email`: `subject` and `text` (plain text), and `html` when the message has an HTML body
//!   (rendered escaped, see [`RenderMode::Html`]); both bodies go out as multipart/alternative.
//! - `sms`: `body`, the length `policy` (`{"policy": "split"}`, the default, or
//!   `{"policy": "truncate", "max_parts": 2}`), and for providers that send only approved
//!   templates (Alibaba Cloud) the provider's `template_code` with `params`, each a Liquid
//!   source.
//! - `push`: `title`, `body` and `data` (string values, each a Liquid source).
//! - `webhook`: `body`, whose output must be JSON.
//!
//! A part that fails to render fails the whole message, naming the part: a message is sent
//! whole or not at all. `abort_message` in any part cancels the send with its reason.

use super::{Limits, RenderMode, RenderOptions, Rendered, Template, TemplateError};
use crate::definition::ChannelKind;
use crate::sms::{self, LengthPolicy};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A message template as saved: Liquid sources by part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MessageTemplate {
    Email {
        subject: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        html: Option<String>,
    },
    Sms {
        body: String,
        #[serde(default)]
        policy: LengthPolicy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_code: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
    },
    Push {
        title: String,
        body: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        data: BTreeMap<String, String>,
    },
    Webhook {
        body: String,
    },
}

/// Why a message template cannot be saved: the part (`subject`, `params.code` …) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidTemplate {
    pub field: String,
    pub message: String,
}

/// Why a message could not be rendered: the part and the render error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct PartFailed {
    pub part: String,
    pub message: String,
}

impl MessageTemplate {
    /// Reads a template from its JSON, naming the field that is wrong.
    pub fn from_value(value: &Value) -> Result<MessageTemplate, InvalidTemplate> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InvalidTemplate {
                field: if path == "." { "template".into() } else { path },
                message: e.inner().to_string(),
            }
        })
    }

    pub fn kind(&self) -> ChannelKind {
        match self {
            MessageTemplate::Email { .. } => ChannelKind::Email,
            MessageTemplate::Sms { .. } => ChannelKind::Sms,
            MessageTemplate::Push { .. } => ChannelKind::Push,
            MessageTemplate::Webhook { .. } => ChannelKind::Webhook,
        }
    }

    /// Parses every part: the check made when the template is saved.
    pub fn compile(&self) -> Result<CompiledMessage, InvalidTemplate> {
        self.compile_with(&Limits::default())
    }

    pub fn compile_with(&self, limits: &Limits) -> Result<CompiledMessage, InvalidTemplate> {
        let parse = |field: &str, source: &str| -> Result<Part, InvalidTemplate> {
            Template::parse_with_limits(source, limits)
                .map(|template| Part {
                    name: field.to_string(),
                    template,
                })
                .map_err(|e: TemplateError| InvalidTemplate {
                    field: field.to_string(),
                    message: e.to_string(),
                })
        };
        let map = |prefix: &str, sources: &BTreeMap<String, String>| {
            sources
                .iter()
                .map(|(k, v)| Ok((k.clone(), parse(&format!("{prefix}.{k}"), v)?)))
                .collect::<Result<Vec<_>, InvalidTemplate>>()
        };
        let compiled = match self {
            MessageTemplate::Email {
                subject,
                text,
                html,
            } => Compiled::Email {
                subject: parse("subject", subject)?,
                text: parse("text", text)?,
                html: html.as_deref().map(|h| parse("html", h)).transpose()?,
            },
            MessageTemplate::Sms {
                body,
                policy,
                template_code,
                params,
            } => {
                if let LengthPolicy::Truncate { max_parts: 0 } = policy {
                    return Err(InvalidTemplate {
                        field: "policy.max_parts".into(),
                        message: "a truncated message keeps at least one part".into(),
                    });
                }
                if template_code.is_none() && !params.is_empty() {
                    return Err(InvalidTemplate {
                        field: "params".into(),
                        message: "parameters go with a provider's template_code".into(),
                    });
                }
                Compiled::Sms {
                    body: parse("body", body)?,
                    policy: *policy,
                    template_code: template_code.clone(),
                    params: map("params", params)?,
                }
            }
            MessageTemplate::Push { title, body, data } => Compiled::Push {
                title: parse("title", title)?,
                body: parse("body", body)?,
                data: map("data", data)?,
            },
            MessageTemplate::Webhook { body } => Compiled::Webhook {
                body: parse("body", body)?,
            },
        };
        Ok(CompiledMessage {
            compiled,
            limits: *limits,
        })
    }
}

struct Part {
    name: String,
    template: Template,
}

enum Compiled {
    Email {
        subject: Part,
        text: Part,
        html: Option<Part>,
    },
    Sms {
        body: Part,
        policy: LengthPolicy,
        template_code: Option<String>,
        params: Vec<(String, Part)>,
    },
    Push {
        title: Part,
        body: Part,
        data: Vec<(String, Part)>,
    },
    Webhook {
        body: Part,
    },
}

/// A template whose parts are parsed, ready to render for each customer.
pub struct CompiledMessage {
    compiled: Compiled,
    limits: Limits,
}

/// A rendered message, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageParts {
    Email {
        subject: String,
        text: String,
        html: Option<String>,
    },
    Sms {
        /// The text to send, after the length policy.
        text: String,
        /// How many parts (segments) the provider will bill.
        parts: usize,
        truncated: bool,
        template_code: Option<String>,
        params: Map<String, Value>,
    },
    Push {
        title: String,
        body: String,
        data: BTreeMap<String, String>,
    },
    Webhook {
        body: Value,
    },
}

/// The result of rendering every part.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedMessage {
    Message(MessageParts),
    /// A part ran `abort_message`: nothing is sent; the reason is recorded.
    Aborted {
        part: String,
        reason: String,
    },
}

impl CompiledMessage {
    /// Renders every part against `data` (see [`super::TemplateData`]) with dates in `zone`
    /// and `now` from the journey's clock.
    pub fn render(
        &self,
        data: &Value,
        zone: Tz,
        now: Option<DateTime<Utc>>,
    ) -> Result<RenderedMessage, PartFailed> {
        let options = |mode| RenderOptions {
            mode,
            zone,
            now,
            currency: None,
            limits: self.limits,
        };
        let text = options(RenderMode::Text);
        let html = options(RenderMode::Html);
        // Ok(Ok(text)), Ok(Err(aborted)) or Err(failed).
        type Outcome = Result<Result<String, RenderedMessage>, PartFailed>;
        let run = |part: &Part, options: &RenderOptions| -> Outcome {
            match super::render_with(&part.template, data, options) {
                Ok(Rendered::Message(m)) => Ok(Ok(m)),
                Ok(Rendered::Aborted(reason)) => Ok(Err(RenderedMessage::Aborted {
                    part: part.name.clone(),
                    reason,
                })),
                Err(error) => Err(PartFailed {
                    part: part.name.clone(),
                    message: error.to_string(),
                }),
            }
        };
        macro_rules! part {
            ($part:expr, $options:expr) => {
                match run($part, $options)? {
                    Ok(m) => m,
                    Err(aborted) => return Ok(aborted),
                }
            };
        }
        let parts = match &self.compiled {
            Compiled::Email {
                subject,
                text: body,
                html: html_body,
            } => MessageParts::Email {
                // A subject is a header line: a line break in it would end the header.
                subject: part!(subject, &text).replace(['\r', '\n'], " "),
                text: part!(body, &text),
                html: match html_body {
                    Some(h) => Some(part!(h, &html)),
                    None => None,
                },
            },
            Compiled::Sms {
                body,
                policy,
                template_code,
                params,
            } => {
                let rendered = part!(body, &text);
                let prepared = sms::prepare(rendered, policy).map_err(|e| PartFailed {
                    part: body.name.clone(),
                    message: e.to_string(),
                })?;
                let mut values = Map::new();
                for (key, part) in params {
                    values.insert(key.clone(), Value::String(part!(part, &text)));
                }
                MessageParts::Sms {
                    parts: prepared.length.segments,
                    truncated: prepared.truncated,
                    text: prepared.text,
                    template_code: template_code.clone(),
                    params: values,
                }
            }
            Compiled::Push { title, body, data } => {
                let mut values = BTreeMap::new();
                for (key, part) in data {
                    values.insert(key.clone(), part!(part, &text));
                }
                MessageParts::Push {
                    title: part!(title, &text),
                    body: part!(body, &text),
                    data: values,
                }
            }
            Compiled::Webhook { body } => {
                let rendered = part!(body, &text);
                let value = serde_json::from_str(&rendered).map_err(|e| PartFailed {
                    part: body.name.clone(),
                    message: format!("the rendered body is not JSON: {e}"),
                })?;
                MessageParts::Webhook { body: value }
            }
        };
        Ok(RenderedMessage::Message(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Tz {
        "Asia/Shanghai".parse().unwrap()
    }

    fn render(template: Value, data: Value) -> Result<RenderedMessage, PartFailed> {
        MessageTemplate::from_value(&template)
            .unwrap()
            .compile()
            .unwrap()
            .render(&data, zone(), None)
    }

    #[test]
    fn an_email_renders_html_escaped_and_text_plain() {
        let got = render(
            json!({"kind": "email", "subject": "Hi {{ first_name }}\n!",
                   "text": "Hi {{ first_name }}", "html": "<p>Hi {{ first_name }}</p>"}),
            json!({"customer": {"first_name": "<Ann & Bo>"}}),
        )
        .unwrap();
        assert_eq!(
            got,
            RenderedMessage::Message(MessageParts::Email {
                subject: "Hi <Ann & Bo> !".into(),
                text: "Hi <Ann & Bo>".into(),
                html: Some("<p>Hi &lt;Ann &amp; Bo&gt;</p>".into()),
            })
        );
    }

    #[test]
    fn an_sms_counts_its_parts_and_truncates_by_its_policy() {
        let long = "x".repeat(200);
        let split = render(json!({"kind": "sms", "body": long}), json!({})).unwrap();
        let RenderedMessage::Message(MessageParts::Sms {
            parts, truncated, ..
        }) = split
        else {
            panic!("{split:?}")
        };
        assert_eq!((parts, truncated), (2, false));
        let cut = render(
            json!({"kind": "sms", "body": long, "policy": {"policy": "truncate", "max_parts": 1}}),
            json!({}),
        )
        .unwrap();
        let RenderedMessage::Message(MessageParts::Sms {
            text,
            parts,
            truncated,
            ..
        }) = cut
        else {
            panic!("{cut:?}")
        };
        assert_eq!((text.chars().count(), parts, truncated), (160, 1, true));
    }

    #[test]
    fn provider_template_params_render_as_strings() {
        let got = render(
            json!({"kind": "sms", "body": "code {{ event.code }}", "template_code": "SMS_1",
                   "params": {"code": "{{ event.code }}"}}),
            json!({"event": {"code": 42}}),
        )
        .unwrap();
        let RenderedMessage::Message(MessageParts::Sms {
            template_code,
            params,
            ..
        }) = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(template_code.as_deref(), Some("SMS_1"));
        assert_eq!(Value::Object(params), json!({"code": "42"}));
    }

    #[test]
    fn abort_in_any_part_cancels_the_message_naming_the_part() {
        let got = render(
            json!({"kind": "push", "title": "Hi", "body": "{% abort_message \"no cart\" %}"}),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            got,
            RenderedMessage::Aborted {
                part: "body".into(),
                reason: "no cart".into()
            }
        );
    }

    #[test]
    fn a_webhook_body_must_render_to_json() {
        let ok = render(
            json!({"kind": "webhook", "body": "{\"id\": \"{{ customer.id }}\"}"}),
            json!({"customer": {"id": "c1"}}),
        )
        .unwrap();
        assert_eq!(
            ok,
            RenderedMessage::Message(MessageParts::Webhook {
                body: json!({"id": "c1"})
            })
        );
        let not_json =
            render(json!({"kind": "webhook", "body": "id={{ 1 }}"}), json!({})).unwrap_err();
        assert_eq!(not_json.part, "body");
        assert!(not_json.to_string().contains("not JSON"), "{not_json}");
    }

    #[test]
    fn saving_names_the_part_that_does_not_parse() {
        let template = MessageTemplate::from_value(
            &json!({"kind": "push", "title": "ok", "body": "ok", "data": {"url": "{% if %}"}}),
        )
        .unwrap();
        let err = template.compile().err().unwrap();
        assert_eq!(err.field, "data.url");
        let unknown =
            MessageTemplate::from_value(&json!({"kind": "sms", "text": "x"})).unwrap_err();
        assert!(
            unknown.message.contains("text") || unknown.message.contains("body"),
            "{unknown}"
        );
        let params =
            MessageTemplate::from_value(&json!({"kind": "sms", "body": "x", "params": {"a": "b"}}))
                .unwrap()
                .compile()
                .err()
                .unwrap();
        assert_eq!(params.field, "params");
    }
}
