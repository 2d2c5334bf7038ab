//! kube-rs and kube-runtime against the in-memory API server over HTTP, exactly as a controller would use a real
//! cluster.

use std::{sync::Arc, time::Duration};

use api_types::{PackerBuilder, PackerBuilderSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        wait::{await_condition, conditions},
        watcher,
    },
};
use kube_sim::{ApiServer, ServerOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start(ServerOptions::default()).await.expect("server starts");
    let config = Config::new(server.url().parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    (server, client)
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &PackerBuilder::crd())
        .await
        .expect("create CRD");
    let established = await_condition(crds, "packerbuilders.ami.refresh.ops", conditions::is_crd_established());
    tokio::time::timeout(WAIT, established)
        .await
        .expect("CRD established in time")
        .expect("wait");
}

fn seed_builder(name: &str) -> PackerBuilder {
    let doc = json!({
        "apiVersion": "ami.refresh.ops/v1alpha1",
        "kind": "PackerBuilder",
        "metadata": {"name": name},
        "spec": {
            "clusterName": "opsy-gitops",
            "region": "us-west-2",
            "builder": {"repoURL": "https://github.com/example/packer.git", "image": "hashicorp/packer:1.11.2"}
        }
    });
    serde_json::from_value(doc).expect("valid builder")
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).expect("cm")
}

#[tokio::test]
async fn controller_reconciles_an_object_created_after_it_started_and_a_second_watch_sees_its_status() {
    let (_server, client) = start().await;
    install_crd(&client).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(client.clone());

    let controller = Controller::new(builders.clone(), watcher::Config::default())
        .run(
            |pb: Arc<PackerBuilder>, ctx: Arc<Api<PackerBuilder>>| async move {
                let status = json!({"status": {"phase": "Ready", "observedGeneration": pb.metadata.generation}});
                ctx.patch_status(&pb.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _: &kube::Error, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(builders.clone()),
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A second client watches independently.
    let observer: Api<PackerBuilder> = Api::default_namespaced(client.clone());
    let seen_ready = tokio::spawn(async move {
        let mut stream = watcher::watcher(observer, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(pb) = stream.try_next().await.expect("watch") {
            if pb.status.as_ref().and_then(|s| s.phase).is_some() {
                return pb;
            }
        }
        panic!("watch ended");
    });

    builders
        .create(&PostParams::default(), &seed_builder("created-later"))
        .await
        .expect("create");
    let pb = tokio::time::timeout(WAIT, seen_ready)
        .await
        .expect("status seen in time")
        .expect("task");
    assert_eq!(pb.name_any(), "created-later");
    assert_eq!(pb.status.and_then(|s| s.observed_generation), Some(1));
    controller.abort();
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_and_the_watcher_recovers() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let first = cms
        .create(&PostParams::default(), &cm("one", json!({})))
        .await
        .expect("create");
    let old_rv = first.resource_version().expect("rv");
    cms.create(&PostParams::default(), &cm("filler", json!({})))
        .await
        .expect("create");
    server.store().compact();

    // A raw watch from the old version is told it is gone.
    let mut raw = cms
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .expect("watch call")
        .boxed();
    match raw.try_next().await.expect("stream") {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // kube-runtime's watcher with short watch timeouts: each re-watch after the first resumes from a version the
    // test compacts away, and the watcher must re-list and still deliver every object.
    let watched = cms.clone();
    let collected = tokio::spawn(async move {
        let mut names = Vec::new();
        let mut stream = watcher::watcher(watched, watcher::Config::default().timeout(1))
            .applied_objects()
            .boxed();
        while let Some(cm) = stream.try_next().await.transpose() {
            if let Ok(cm) = cm {
                names.push(cm.name_any());
                if names.contains(&"two".to_owned()) {
                    return names;
                }
            }
        }
        names
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.store().expire_watch_positions();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cms.create(&PostParams::default(), &cm("two", json!({})))
        .await
        .expect("create two");
    let names = tokio::time::timeout(WAIT, collected)
        .await
        .expect("recovered in time")
        .expect("task");
    assert!(
        names.contains(&"one".to_owned()) && names.contains(&"two".to_owned()),
        "{names:?}"
    );
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "configmaps")
        .count();
    assert!(
        lists >= 2,
        "the watcher should have re-listed after 410, lists = {lists}"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut obj = cm("held", json!({}));
    obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &obj).await.expect("create");
    cms.delete("held", &DeleteParams::default()).await.expect("delete");
    let marked = cms.get("held").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let patch = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove finalizer");
    let gone = cms.get_opt("held").await.expect("get");
    assert!(
        gone.is_none(),
        "object should be gone once the last finalizer is removed"
    );
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .expect("owner");
    let owner_ref =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().expect("uid")}]);
    for name in ["dep-a", "dep-b"] {
        let mut dep: ConfigMap = cm(name, json!({}));
        dep.metadata.owner_references = serde_json::from_value(owner_ref.clone()).expect("refs");
        cms.create(&PostParams::default(), &dep).await.expect("dependent");
    }
    let mut orphan = cm("orphan-owned", json!({}));
    orphan.metadata.owner_references = serde_json::from_value(owner_ref.clone()).expect("refs");
    let other = cms
        .create(&PostParams::default(), &cm("other-owner", json!({})))
        .await
        .expect("other");
    let mut refs: Vec<serde_json::Value> = serde_json::from_value(owner_ref).expect("refs");
    refs.push(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "other-owner", "uid": other.uid().expect("uid")}),
    );
    orphan.metadata.owner_references = serde_json::from_value(json!(refs)).expect("refs");
    cms.create(&PostParams::default(), &orphan).await.expect("two owners");

    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert!(
        !names.contains(&"dep-a".to_owned()) && !names.contains(&"dep-b".to_owned()),
        "{names:?}"
    );
    let survivor = cms
        .get("orphan-owned")
        .await
        .expect("object with another owner survives");
    assert_eq!(survivor.owner_references().len(), 1);
    assert_eq!(survivor.owner_references()[0].name, "other-owner");
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .expect("owner");
    let mut dep = cm("dep", json!({}));
    dep.metadata.owner_references = serde_json::from_value(
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().expect("uid")}]),
    )
    .expect("refs");
    cms.create(&PostParams::default(), &dep).await.expect("dep");
    cms.delete("owner", &DeleteParams::orphan()).await.expect("delete");
    let kept = cms.get("dep").await.expect("orphaned dependent kept");
    assert!(kept.owner_references().is_empty());
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut names = Vec::new();
    for _ in 0..5 {
        let obj: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "build-"}})).expect("cm");
        names.push(
            cms.create(&PostParams::default(), &obj)
                .await
                .expect("create")
                .name_any(),
        );
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 5);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("build-") && n.len() == "build-".len() + 5),
        "{names:?}"
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("a", json!({"app": "x", "tier": "web"})))
        .await
        .expect("a");
    cms.create(&PostParams::default(), &cm("b", json!({"app": "x", "tier": "db"})))
        .await
        .expect("b");
    cms.create(&PostParams::default(), &cm("c", json!({"app": "y"})))
        .await
        .expect("c");
    let names =
        |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> { list.iter().map(ResourceExt::name_any).collect() };
    assert_eq!(
        names(cms.list(&ListParams::default().labels("app=x")).await.expect("list")),
        ["a", "b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app=x,tier notin (db)"))
                .await
                .expect("list")
        ),
        ["a"]
    );
    assert_eq!(
        names(cms.list(&ListParams::default().labels("!tier")).await.expect("list")),
        ["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .expect("list")
        ),
        ["b"]
    );
    let other_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert!(
        other_ns
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn label_values_and_keys_are_validated_as_the_real_api_server_does() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let invalid = |result: kube::Result<ConfigMap>| match result {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{}", e.message);
            e.message
        }
        other => panic!("expected 422 Invalid, got {other:?}"),
    };
    let message = invalid(
        cms.create(&PostParams::default(), &cm("long", json!({"a": "x".repeat(64)})))
            .await,
    );
    assert!(message.contains("must be no more than 63 characters"), "{message}");
    let message = invalid(
        cms.create(&PostParams::default(), &cm("syntax", json!({"a": "-bad"})))
            .await,
    );
    assert!(
        message.contains("must start and end with an alphanumeric character"),
        "{message}"
    );
    invalid(
        cms.create(&PostParams::default(), &cm("key", json!({"Bad_Prefix/a": "v"})))
            .await,
    );
    invalid(
        cms.create(&PostParams::default(), &cm("keylen", json!({"k".repeat(64): "v"})))
            .await,
    );
    // Valid at the edge: 63 characters, an empty value, a prefixed key.
    cms.create(
        &PostParams::default(),
        &cm(
            "ok",
            json!({"a": "x".repeat(63), "b": "", "ami.refresh.ops/build-id": "3cb1b7aa-0000"}),
        ),
    )
    .await
    .expect("valid labels");
    // An update is checked too.
    let mut changed = cms.get("ok").await.expect("get");
    changed.metadata.labels = Some([("a".to_owned(), "y".repeat(64))].into());
    invalid(cms.replace("ok", &PostParams::default(), &changed).await);
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict_and_duplicates_already_exist() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = cms
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .expect("create");
    let mut first = created.clone();
    first.data = Some([("k".to_owned(), "1".to_owned())].into());
    cms.replace("x", &PostParams::default(), &first)
        .await
        .expect("first replace");
    let mut stale = created;
    stale.data = Some([("k".to_owned(), "2".to_owned())].into());
    match cms.replace("x", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
    match cms.create(&PostParams::default(), &cm("x", json!({}))).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected 409 AlreadyExists, got {other:?}"),
    }
    match cms.get("nope").await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn status_writes_ignore_spec_and_spec_writes_ignore_status_and_generation_tracks_spec() {
    let (_server, client) = start().await;
    install_crd(&client).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(client.clone());
    let created = builders
        .create(&PostParams::default(), &seed_builder("pb"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    // Defaults from the schema were applied by the server.
    assert_eq!(created.spec.max_failed_jobs, 3);
    assert_eq!(created.spec.builder.branch, "main");

    let status_patch = json!({"spec": {"region": "eu-west-1"}, "status": {"failedJobCount": 2}});
    let after_status = builders
        .patch_status("pb", &PatchParams::default(), &Patch::Merge(&status_patch))
        .await
        .expect("status");
    assert_eq!(
        after_status.spec.region, "us-west-2",
        "a status write must not change spec"
    );
    assert_eq!(after_status.status.as_ref().map(|s| s.failed_job_count), Some(2));
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    let spec_patch = json!({"spec": {"region": "eu-west-1"}, "status": {"failedJobCount": 9}});
    let after_spec = builders
        .patch("pb", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .expect("spec");
    assert_eq!(after_spec.spec.region, "eu-west-1");
    assert_eq!(
        after_spec.status.as_ref().map(|s| s.failed_job_count),
        Some(2),
        "a main write must not change status"
    );
    assert_eq!(after_spec.metadata.generation, Some(2));

    let label_patch = json!({"metadata": {"labels": {"team": "a"}}});
    let after_label = builders
        .patch("pb", &PatchParams::default(), &Patch::Merge(&label_patch))
        .await
        .expect("labels");
    assert_eq!(
        after_label.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );

    // A write that changes nothing keeps the resourceVersion.
    let again = builders
        .patch("pb", &PatchParams::default(), &Patch::Merge(&label_patch))
        .await
        .expect("no-op");
    assert_eq!(again.resource_version(), after_label.resource_version());
}

#[tokio::test]
async fn server_side_apply_of_status_with_a_field_manager() {
    let (_server, client) = start().await;
    install_crd(&client).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(client.clone());
    builders
        .create(&PostParams::default(), &seed_builder("pb"))
        .await
        .expect("create");
    let apply = json!({"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "PackerBuilder",
        "status": {"phase": "Building", "jobName": "pb-abc12"}});
    let params = PatchParams::apply("packer-build-controller").force();
    let applied = builders
        .patch_status("pb", &params, &Patch::Apply(&apply))
        .await
        .expect("apply");
    let status = applied.status.expect("status");
    assert_eq!(status.job_name.as_deref(), Some("pb-abc12"));
    assert_eq!(
        status.phase,
        Some(api_types::packer_builder::PackerBuilderPhase::Building)
    );
}

#[tokio::test]
async fn invalid_custom_resources_are_refused_naming_the_field_and_unknown_fields_pruned() {
    let (_server, client) = start().await;
    install_crd(&client).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(client.clone());
    let mut bad = seed_builder("bad");
    bad.spec.region = "Oregon".into();
    match builders.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(e.message.contains("spec.region"), "{}", e.message);
        }
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
    // Unknown fields are dropped, as the API server prunes them.
    let raw: Api<kube::api::DynamicObject> =
        Api::default_namespaced_with(client.clone(), &kube::api::ApiResource::erase::<PackerBuilder>(&()));
    let mut obj: kube::api::DynamicObject =
        serde_json::from_value(serde_json::to_value(seed_builder("pruned")).expect("json")).expect("dyn");
    obj.data["spec"]["notAField"] = json!(true);
    let created = raw.create(&PostParams::default(), &obj).await.expect("create");
    assert!(created.data["spec"].get("notAField").is_none());
    let _: PackerBuilderSpec = serde_json::from_value(created.data["spec"].clone()).expect("typed");
}

#[tokio::test]
async fn namespaces_must_exist_and_deleting_one_removes_its_objects() {
    let (_server, client) = start().await;
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    assert!(
        missing
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .is_err()
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    team.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .expect("create in new namespace");
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .expect("delete namespace");
    assert!(team.get_opt("x").await.expect("get").is_none());
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
        {"name": "b", "image": "y"}
    ]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create");
    let patch = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}});
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch");
    let containers = patched.spec.expect("spec").containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("x"));
    assert_eq!(containers[0].env.as_ref().map(Vec::len), Some(2));
}

#[tokio::test]
async fn requests_are_recorded_in_rbac_terms() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("r", json!({})))
        .await
        .expect("create");
    cms.get("r").await.expect("get");
    cms.list(&ListParams::default()).await.expect("list");
    cms.delete("r", &DeleteParams::default()).await.expect("delete");
    let verbs: Vec<(String, String, String)> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "configmaps")
        .map(|r| (r.verb, r.namespace, r.name))
        .collect();
    assert_eq!(
        verbs,
        [
            ("create".to_owned(), "default".to_owned(), String::new()),
            ("get".to_owned(), "default".to_owned(), "r".to_owned()),
            ("list".to_owned(), "default".to_owned(), String::new()),
            ("delete".to_owned(), "default".to_owned(), "r".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_events_k8s_io_event_is_seen_as_a_core_event_as_kubectl_describe_reads_it() {
    let (_server, client) = start().await;
    let recorded: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "pb.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "opsy.dev/packer-build-controller",
        "reportingInstance": "pbc-0",
        "action": "Reconcile",
        "reason": "BuildStarted",
        "note": "Job pb-1 started",
        "type": "Normal",
        "regarding": {"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "PackerBuilder", "name": "pb",
                      "namespace": "default", "uid": "u-1"},
    }))
    .expect("event");
    recorded.create(&PostParams::default(), &event).await.expect("create");
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client.clone());
    // What `kubectl describe packerbuilder pb` asks for.
    let seen = core
        .list(&ListParams::default().fields("involvedObject.name=pb,involvedObject.uid=u-1"))
        .await
        .expect("list")
        .items;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].message.as_deref(), Some("Job pb-1 started"));
    assert_eq!(seen[0].reason.as_deref(), Some("BuildStarted"));
    assert_eq!(seen[0].involved_object.kind.as_deref(), Some("PackerBuilder"));
    assert_eq!(
        seen[0].reporting_component.as_deref(),
        Some("opsy.dev/packer-build-controller")
    );
}
