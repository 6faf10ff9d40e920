//! kube-rs (`kube` 5 with `k8s-openapi`) against `agora apiserver`'s secure default, with nothing but the kubeconfig
//! it writes: typed create and get, a dry-run create and patch that store nothing, a metadata-only watcher
//! (`Api<PartialObjectMeta<K>>`, which lists and watches as `PartialObjectMetadata`) seeing objects come and go, and
//! delete-collection by label.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_e2e::ApiserverProcess as Apiserver;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Agora's App as a kube-rs user declares it without Agora's crates: metadata and an untyped spec.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct App {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    metadata: ObjectMeta,
    spec: serde_json::Value,
}

impl kube::Resource for App {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind((): &()) -> std::borrow::Cow<'_, str> {
        "App".into()
    }
    fn group((): &()) -> std::borrow::Cow<'_, str> {
        "agora".into()
    }
    fn version((): &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural((): &()) -> std::borrow::Cow<'_, str> {
        "apps".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn app(name: &str, tier: &str) -> App {
    serde_json::from_value(json!({
        "apiVersion": "agora/v1", "kind": "App",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {"cmd": "sleep 100"},
    }))
    .unwrap()
}

/// Records a watch event as `apply NAME`, `delete NAME` or `listed`.
fn note(seen: &mut BTreeSet<String>, event: watcher::Event<PartialObjectMeta<App>>) {
    match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            seen.insert(format!("apply {}", o.metadata.name.unwrap_or_default()));
        }
        watcher::Event::Delete(o) => {
            seen.insert(format!("delete {}", o.metadata.name.unwrap_or_default()));
        }
        watcher::Event::Init => {}
        watcher::Event::InitDone => {
            seen.insert("listed".to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_drives_agora() {
    let server = tokio::task::block_in_place(Apiserver::secure);
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let metadata: Api<PartialObjectMeta<App>> = Api::namespaced(client, "default");

    // A dry run answers with the server's defaults and stores nothing.
    let dry = apps.create(&PostParams { dry_run: true, ..PostParams::default() }, &app("ghost", "web")).await.unwrap();
    assert_eq!(dry.spec["mem"], 128.0, "defaults: {dry:?}");
    assert!(apps.get_opt("ghost").await.unwrap().is_none(), "the dry-run create was stored");

    // A metadata-only watcher sees what happens from here on.
    let mut watch = watcher(metadata, watcher::Config::default()).default_backoff().boxed();
    let mut seen = BTreeSet::new();
    let mut next = async |seen: &BTreeSet<String>| {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next()).await;
        event
            .unwrap_or_else(|_| panic!("no watch event within 20 s; saw {seen:?}"))
            .expect("the watch goes on")
            .expect("a watch event")
    };
    while !seen.contains("listed") {
        let event = next(&seen).await;
        note(&mut seen, event);
    }

    apps.create(&PostParams::default(), &app("web", "web")).await.unwrap();
    apps.create(&PostParams::default(), &app("db", "db")).await.unwrap();
    let got = apps.get("web").await.unwrap();
    assert!(got.metadata.uid.is_some() && got.metadata.resource_version.is_some(), "{got:?}");
    let patch = Patch::Merge(json!({"spec": {"instances": 9}}));
    let dry = apps.patch("web", &PatchParams { dry_run: true, ..PatchParams::default() }, &patch).await.unwrap();
    assert_eq!(dry.spec["instances"], 9);
    assert_eq!(apps.get("web").await.unwrap().spec["instances"], 1, "the dry-run patch was stored");

    let deleted = apps
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=web"))
        .await
        .unwrap()
        .left()
        .expect("the deleted objects");
    let names: Vec<_> = deleted.items.iter().filter_map(|a| a.metadata.name.clone()).collect();
    assert_eq!(names, ["web"]);
    let left: Vec<_> =
        apps.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|a| a.metadata.name).collect();
    assert_eq!(left, ["db"]);

    let want = ["apply web", "apply db", "delete web"];
    while !want.iter().all(|w| seen.contains(*w)) {
        let event = next(&seen).await;
        note(&mut seen, event);
    }
    assert!(!seen.contains("apply ghost"), "a dry run reached a watcher: {seen:?}");
}
