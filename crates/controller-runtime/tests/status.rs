//! The one status write of both controllers, against the in-memory API server: a field that stops being true is
//! removed from the stored object (a plain merge patch would leave it behind), for both kinds.

use api_types::{AMIRefresher, AMIRefresherStatus, PackerBuilder, PackerBuilderStatus};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, Config, CustomResourceExt, api::PostParams};
use kube_sim::{ApiServer, ServerOptions};
use serde_json::json;

async fn client() -> (ApiServer, Client) {
    let server = ApiServer::start(ServerOptions::default()).await.expect("server");
    let client = Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [PackerBuilder::crd(), AMIRefresher::crd()] {
        crds.create(&PostParams::default(), &crd).await.expect("CRD");
    }
    (server, client)
}

fn seed(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../")
            .join(path),
    )
    .expect("seed");
    let mut doc: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
    doc["metadata"]["namespace"] = json!("default");
    doc
}

#[tokio::test]
async fn a_packer_builder_status_field_that_stops_being_true_is_removed() {
    let (_server, client) = client().await;
    let api: Api<PackerBuilder> = Api::default_namespaced(client);
    let pb: PackerBuilder = serde_json::from_value(seed("examples/seed/packerbuilder-000.yaml")).expect("typed");
    api.create(&PostParams::default(), &pb).await.expect("create");
    let name = "packer-builder-local";
    let first = PackerBuilderStatus {
        build_id: Some("b-1".into()),
        last_run_base_image_id: Some("ami-0123456789abcdef0".into()),
        ..PackerBuilderStatus::default()
    };
    assert!(
        controller_runtime::write_status(&api, name, &PackerBuilderStatus::default(), &first)
            .await
            .expect("write")
    );
    // The next build is self-contained: it has no base AMI.
    let second = PackerBuilderStatus {
        build_id: Some("b-2".into()),
        ..PackerBuilderStatus::default()
    };
    controller_runtime::write_status(&api, name, &first, &second)
        .await
        .expect("write");
    let stored = api.get(name).await.expect("get").status.expect("status");
    assert_eq!(stored.build_id.as_deref(), Some("b-2"));
    assert_eq!(stored.last_run_base_image_id, None, "the earlier base AMI is gone");
    assert!(
        !controller_runtime::write_status(&api, name, &second, &second)
            .await
            .expect("write"),
        "nothing changed, nothing written"
    );
}

#[tokio::test]
async fn an_ami_refresher_status_field_that_stops_being_true_is_removed() {
    let (_server, client) = client().await;
    let api: Api<AMIRefresher> = Api::default_namespaced(client);
    let amr: AMIRefresher = serde_json::from_value(seed("examples/seed/amirefresher-001.yaml")).expect("typed");
    api.create(&PostParams::default(), &amr).await.expect("create");
    let name = "node-group-ami-refresh";
    let halted = AMIRefresherStatus {
        target_ami: Some("ami-0123456789abcdef0".into()),
        halted_target: Some("ami-0123456789abcdef0".into()),
        ..AMIRefresherStatus::default()
    };
    controller_runtime::write_status(&api, name, &AMIRefresherStatus::default(), &halted)
        .await
        .expect("write");
    let lifted = AMIRefresherStatus {
        target_ami: Some("ami-0123456789abcdef1".into()),
        ..AMIRefresherStatus::default()
    };
    controller_runtime::write_status(&api, name, &halted, &lifted)
        .await
        .expect("write");
    let stored = api.get(name).await.expect("get").status.expect("status");
    assert_eq!(stored.target_ami.as_deref(), Some("ami-0123456789abcdef1"));
    assert_eq!(stored.halted_target, None, "the lifted halt is gone");
}
