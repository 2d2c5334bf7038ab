//! Pure rendering of a [`Notification`] per channel.

use serde_json::{Value, json};

use crate::Notification;

/// One line: `PackerBuilder default/pb: Building -> Ready (BuildSucceeded)`.
pub fn title(n: &Notification) -> String {
    let from = n.from.as_deref().unwrap_or("New");
    format!(
        "{} {}/{}: {from} -> {} ({})",
        n.kind, n.namespace, n.name, n.to, n.reason
    )
}

/// Plain text: the title, the message and the AMIs.
pub fn text(n: &Notification) -> String {
    let mut lines = vec![title(n), n.message.clone()];
    if let Some(base) = &n.base_ami {
        lines.push(format!("Base AMI: {base}"));
    }
    if let Some(ami) = &n.ami {
        lines.push(format!("AMI: {ami}"));
    }
    if let Some(group) = &n.node_group {
        lines.push(format!("Node group: {group}"));
    }
    lines.join("\n")
}

/// A simple HTML e-mail body: the title as a heading and the text lines as paragraphs, all escaped.
pub fn html(n: &Notification) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = format!("<h3>{}</h3>", escape(&title(n)));
    for line in text(n).lines().skip(1) {
        out.push_str(&format!("<p>{}</p>", escape(line)));
    }
    out
}

/// Slack `chat.postMessage` body for one channel: a fallback `text` and an attachment with the severity colour and
/// Block Kit sections.
pub fn slack(n: &Notification, channel: &str) -> Value {
    let mut fields = Vec::new();
    for (label, value) in [
        ("Base AMI", &n.base_ami),
        ("AMI", &n.ami),
        ("Node group", &n.node_group),
    ] {
        if let Some(v) = value {
            fields.push(json!({"type": "mrkdwn", "text": format!("*{label}*\n`{v}`")}));
        }
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", title(n))}}),
        json!({"type": "section", "text": {"type": "plain_text", "text": n.message}}),
    ];
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    json!({
        "channel": channel,
        "text": title(n),
        "attachments": [{"color": n.severity.hex_colour(), "blocks": blocks}],
    })
}

/// Discord webhook body: one embed with the severity colour.
pub fn discord(n: &Notification) -> Value {
    let mut fields = Vec::new();
    for (label, value) in [
        ("Base AMI", &n.base_ami),
        ("AMI", &n.ami),
        ("Node group", &n.node_group),
    ] {
        if let Some(v) = value {
            fields.push(json!({"name": label, "value": v, "inline": true}));
        }
    }
    json!({"embeds": [{"title": title(n), "description": n.message, "color": n.severity.int_colour(), "fields": fields}]})
}

/// Generic webhook body: the model itself.
pub fn webhook(n: &Notification) -> Value {
    serde_json::to_value(n).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn built() -> Notification {
        Notification {
            kind: "PackerBuilder".into(),
            namespace: "default".into(),
            name: "packer-builder-local".into(),
            from: Some("Building".into()),
            to: "Ready".into(),
            reason: "BuildSucceeded".into(),
            message: "built and verified AMI ami-0123".into(),
            severity: Severity::Success,
            base_ami: Some("ami-base".into()),
            ami: Some("ami-0123".into()),
            node_group: None,
        }
    }

    #[test]
    fn slack_has_one_channel_a_fallback_text_and_the_severity_colour() {
        let body = slack(&built(), "C0123");
        assert_eq!(body["channel"], "C0123");
        assert_eq!(
            body["text"],
            "PackerBuilder default/packer-builder-local: Building -> Ready (BuildSucceeded)"
        );
        assert_eq!(body["attachments"][0]["color"], "#2EB67D");
        let fields = body["attachments"][0]["blocks"][2]["fields"]
            .as_array()
            .expect("fields");
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn html_is_escaped() {
        let mut n = built();
        n.message = "<script>alert(1)</script> & more".into();
        let body = html(&n);
        assert!(body.contains("&lt;script&gt;") && body.contains("&amp; more"), "{body}");
        assert!(!body.contains("<script>"));
    }

    #[test]
    fn colours_follow_severity() {
        let mut n = built();
        for (severity, hex, int) in [
            (Severity::Info, "#439FE0", 0x0043_9FE0),
            (Severity::Success, "#2EB67D", 0x002E_B67D),
            (Severity::Warning, "#ECB22E", 0x00EC_B22E),
            (Severity::Failure, "#E01E5A", 0x00E0_1E5A),
        ] {
            n.severity = severity;
            assert_eq!(slack(&n, "C")["attachments"][0]["color"], hex);
            assert_eq!(discord(&n)["embeds"][0]["color"], int);
        }
    }

    #[test]
    fn webhook_body_is_the_model_and_text_lists_the_amis() {
        let body = webhook(&built());
        assert_eq!(body["kind"], "PackerBuilder");
        assert_eq!(body["severity"], "success");
        assert_eq!(body["baseAmi"], "ami-base");
        assert!(body.get("nodeGroup").is_none());
        let t = text(&built());
        assert!(t.contains("Base AMI: ami-base") && t.contains("AMI: ami-0123"), "{t}");
        let mut first = built();
        first.from = None;
        assert!(title(&first).contains("New -> Ready"));
    }
}
