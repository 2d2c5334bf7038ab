//! SNS and SES delivery against the AWS emulator: the messages are stored by the emulator with subject and body.

use aws_sim::{Account, AwsEmulator};
use notifier::{DeliveryPolicy, Notification, SesSink, Severity, Sink, SnsSink, deliver};

const REGION: &str = "us-west-2";

fn note() -> Notification {
    Notification {
        kind: "PackerBuilder".into(),
        namespace: "default".into(),
        name: "pb".into(),
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

#[tokio::test]
async fn sns_publish_and_ses_send_email_arrive_with_subject_and_body() {
    let aws = AwsEmulator::start().await.expect("emulator");
    let account = Account::random();
    let sdk = aws.sdk_config(REGION).await;
    let sns = aws.sns(&sdk, &account);
    let topic = sns
        .create_topic()
        .name("ami-builds")
        .send()
        .await
        .expect("topic")
        .topic_arn
        .expect("arn");
    let ses = aws.sesv2(&sdk, &account);
    ses.create_email_identity()
        .email_identity("ami-bot@example.com")
        .send()
        .await
        .expect("identity");

    let http = reqwest::Client::new();
    let sink = Sink::Sns(SnsSink {
        client: sns,
        topic_arn: topic.clone(),
    });
    deliver(&http, &sink, &note(), DeliveryPolicy::default())
        .await
        .expect("sns");
    let sink = Sink::Ses(SesSink {
        client: ses,
        from: "ami-bot@example.com".into(),
        to: vec!["platform@example.com".into()],
    });
    deliver(&http, &sink, &note(), DeliveryPolicy::default())
        .await
        .expect("ses");

    let sent = aws.sent(&account, REGION).await.expect("sent");
    let published = &sent["sns"][0];
    assert_eq!(published["topicArn"], topic.as_str());
    assert_eq!(
        published["subject"],
        "PackerBuilder default/pb: Building -> Ready (BuildSucceeded)"
    );
    assert!(
        published["message"]
            .as_str()
            .is_some_and(|m| m.contains("AMI: ami-0123")),
        "{published}"
    );
    let mail = &sent["ses"][0];
    assert_eq!(mail["source"], "ami-bot@example.com");
    assert_eq!(
        mail["subject"],
        "PackerBuilder default/pb: Building -> Ready (BuildSucceeded)"
    );
    assert!(mail["body"].as_str().is_some_and(|b| b.contains("ami-0123")), "{mail}");
}

#[tokio::test]
async fn an_unverified_sender_is_refused_by_name() {
    let aws = AwsEmulator::start().await.expect("emulator");
    let account = Account::random();
    let sdk = aws.sdk_config(REGION).await;
    let sink = Sink::Ses(SesSink {
        client: aws.sesv2(&sdk, &account),
        from: "nobody@example.com".into(),
        to: vec!["a@example.com".into()],
    });
    let err = deliver(&reqwest::Client::new(), &sink, &note(), DeliveryPolicy::default())
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "MessageRejected");
}
