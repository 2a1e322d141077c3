//! What a fleet costs the API: a reconcile that starts before the watches show the operator's own
//! writes does not write again; unchanged references are not fetched again; progress figures
//! alone are paced. Mock API server; every request is also checked against the chart's RBAC.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use meteor_operator::api::MeteorApp;
use meteor_operator::controller::cached::Cached;
use meteor_operator::controller::{Context, ListedApp, Metrics, SharedIndex, reconcile};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Runs `apps` one after another on `ctx`, then checks the mock saw exactly `expected` requests.
async fn reconcile_in_turn(
    apps: Vec<MeteorApp>,
    ctx: Arc<Context>,
    transcript: &Transcript,
    task: tokio::task::JoinHandle<usize>,
    expected: usize,
) {
    for app in apps {
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(Arc::new(app), ctx.clone()),
        )
        .await
        .expect("reconcile finished in time")
        .expect("reconcile succeeds");
    }
    drop(ctx);
    mock_saw_exactly(transcript, task, expected).await;
}

/// `app` with the status its last status patch in `transcript` stored.
fn with_written_status(mut app: MeteorApp, transcript: &Transcript) -> MeteorApp {
    let seen = transcript.seen();
    let patch = seen
        .iter()
        .rev()
        .find(|s| s.method == http::Method::PATCH && s.path == STATUS)
        .expect("a status patch");
    app.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    app
}

/// On a real cluster the next reconcile of a new app (its Deployment's watch event) often runs
/// before the Service's watch event is in: it must neither look for a namesake again nor
/// re-apply what it just wrote.
#[tokio::test]
async fn a_reconcile_before_the_caches_show_our_writes_does_not_write_again() {
    let mut script = first_visit_script();
    // The second pass: its references, and nothing else.
    script.push(Expect::get(SECRET, mongo_secret()));
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    // Caches that never catch up during the test: as if every watch event were still in flight.
    let ctx = context(client, vec![], vec![], vec![]);
    let first = minimal_app();
    reconcile(Arc::new(first.clone()), ctx.clone())
        .await
        .expect("the first pass succeeds");
    let second = with_written_status(first, &transcript);
    reconcile_in_turn(vec![second], ctx, &transcript, task, n).await;
    assert_eq!(transcript.writes().len(), 4, "{:?}", transcript.writes());
}

fn secret_with_version(version: &str) -> (http::StatusCode, serde_json::Value) {
    let (code, mut secret) = mongo_secret();
    secret["metadata"]["resourceVersion"] = version.into();
    (code, secret)
}

fn secret_version(version: &str) -> PartialObjectMeta<Secret> {
    let mut meta = PartialObjectMeta::<Secret>::default();
    meta.metadata.name = Some("todos-mongo".into());
    meta.metadata.namespace = Some("default".into());
    meta.metadata.resource_version = Some(version.into());
    meta
}

/// A settled app's references are fetched once; while the Secret's version (from the metadata
/// watch) stays the same, later passes reuse the result, and a new version is fetched again.
#[tokio::test]
async fn unchanged_references_are_not_fetched_again_and_a_new_version_is() {
    let app = support::app().settled().build();
    let (deployment, service, budget) = applied_children(&app);
    let deployment = rolled_out(deployment, 2);
    let script = vec![
        Expect::get(SECRET, secret_with_version("7")),
        Expect::get(SECRET, secret_with_version("8")),
    ];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    let index = SharedIndex::default();
    index.observer()(&Ok(Event::Apply(ListedApp::from_value(
        serde_json::to_value(&app).unwrap(),
    ))));
    let (versions, mut versions_writer) = kube::runtime::reflector::store();
    versions_writer.apply_watcher_event(&Event::Init);
    versions_writer.apply_watcher_event(&Event::InitApply(secret_version("7")));
    versions_writer.apply_watcher_event(&Event::InitDone);
    let ctx = Arc::new(
        Context::new(
            client,
            cache_of(vec![deployment]),
            cache_of(vec![service]),
            cache_of(budget.into_iter().collect()),
            Arc::new(Metrics::default()),
        )
        .with_references(index, versions, store_of(vec![])),
    );
    for _ in 0..3 {
        reconcile(Arc::new(app.clone()), ctx.clone()).await.unwrap();
    }
    assert_eq!(transcript.seen().len(), 1, "one GET for three passes");
    versions_writer.apply_watcher_event(&Event::Apply(secret_version("8")));
    reconcile_in_turn(vec![app.clone(), app], ctx, &transcript, task, n).await;
    assert!(transcript.writes().is_empty(), "{:?}", transcript.writes());
}

/// Pods of a new app appearing one event after another: pods created but not ready are quiet
/// progress, which waits for the next write or the resync (the reconcile comes back for it then),
/// while Ready turning True is written at once.
#[tokio::test]
async fn progress_alone_is_paced_and_a_changed_condition_is_not() {
    let app = minimal_app();
    let (deployment, service, budget) = applied_children(&app);
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
        Expect::get(SECRET, mongo_secret()),
        Expect::get(SECRET, mongo_secret()),
        Expect::status(&app),
    ];
    let n = script.len();
    let (client, transcript, task) = mock_client(script);
    // First pass: the Deployment exists, its controller has not reported yet.
    let (deployments, mut deployments_writer) = kube::runtime::reflector::store();
    deployments_writer.apply_watcher_event(&Event::Init);
    deployments_writer.apply_watcher_event(&Event::InitApply(Cached::new(deployment.clone())));
    deployments_writer.apply_watcher_event(&Event::InitDone);
    let ctx = Arc::new(Context::new(
        client,
        deployments,
        cache_of(vec![service]),
        cache_of(budget.into_iter().collect()),
        Arc::new(Metrics::default()),
    ));
    reconcile(Arc::new(app.clone()), ctx.clone()).await.unwrap();
    let first = with_written_status(app.clone(), &transcript);
    assert_eq!(first.status.as_ref().unwrap().replicas, 0);

    // Second pass: two pods exist, none ready: only counts changed, so no write yet.
    let mut started = rolled_out(deployment.clone(), 2);
    let status = started.status.as_mut().unwrap();
    status.ready_replicas = Some(0);
    status.available_replicas = Some(0);
    status.unavailable_replicas = Some(2);
    deployments_writer.apply_watcher_event(&Event::Apply(Cached::new(started)));
    let paced = reconcile(Arc::new(first.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(transcript.writes().len(), 1, "{:?}", transcript.writes());
    // Action keeps its delay private; its Debug form shows it.
    let shown = format!("{paced:?}");
    let waits_seconds: f64 = shown
        .split("Some(")
        .nth(1)
        .and_then(|rest| rest.split("s)").next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("a requeue with a delay: {shown}"));
    assert!(
        waits_seconds > 60.0 && waits_seconds <= 300.0,
        "comes back for the quiet write after a minute and by the resync (5 min): {shown}"
    );

    // Third pass: the pods are ready: Ready flips, written at once with the counts.
    deployments_writer.apply_watcher_event(&Event::Apply(Cached::new(rolled_out(deployment, 2))));
    reconcile_in_turn(vec![first], ctx, &transcript, task, n).await;
    let last = with_written_status(app, &transcript);
    let status = last.status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
}

/// The cache drops a Deployment's pod spec and most metadata: the rollout plan must read the
/// same facts from the trimmed object as from the whole one, and the status the same progress.
#[test]
fn a_trimmed_deployment_tells_the_plan_and_status_what_the_whole_one_does() {
    use meteor_operator::plan::TierFacts;
    let app = minimal_app();
    let (deployment, _, _) = applied_children(&app);
    let mut whole = rolled_out(deployment, 2);
    whole
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("deployment.kubernetes.io/revision".into(), "3".into());
    let trimmed = Cached::new(whole.clone()).object();
    // No pod spec, and no template metadata (two maps): what the plans read of the template is
    // in three cache-only annotations of the Deployment.
    let template = &trimmed.spec.as_ref().unwrap().template;
    assert!(template.spec.is_none() && template.metadata.is_none());
    assert_eq!(TierFacts::of(&trimmed), TierFacts::of(&whole));
    let facts = TierFacts::of(&trimmed);
    assert!(facts.image.is_some() && facts.template.is_some() && facts.config.is_some());
    assert_eq!(
        meteor_operator::status::Progress::of(Some(&trimmed)),
        meteor_operator::status::Progress::of(Some(&whole))
    );

    // Of the conditions, only a stalled rollout's is kept: healthy ones go, a stuck one stays.
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    let condition = |type_: &str, status: &str, reason: &str| DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some("ReplicaSet \"todos-5d4f8b7c9\" has successfully progressed.".into()),
        ..DeploymentCondition::default()
    };
    whole.status.as_mut().unwrap().conditions = Some(vec![
        condition("Available", "True", "MinimumReplicasAvailable"),
        condition("Progressing", "True", "NewReplicaSetAvailable"),
    ]);
    let trimmed = Cached::new(whole.clone()).object();
    assert_eq!(trimmed.status.as_ref().unwrap().conditions, None);
    let stuck_whole = stuck(whole);
    let stuck_trimmed = Cached::new(stuck_whole.clone()).object();
    let progress = meteor_operator::status::Progress::of(Some(&stuck_trimmed));
    assert!(progress.stuck);
    assert_eq!(
        progress,
        meteor_operator::status::Progress::of(Some(&stuck_whole))
    );
    assert_eq!(TierFacts::of(&stuck_trimmed), TierFacts::of(&stuck_whole));
}
