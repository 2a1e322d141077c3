//! One MeteorApp never takes over another's objects. Children are named after their app
//! (`NAME`, `NAME-app`, `NAME-proxy`, ...), so `shop`'s app Service `shop-app` is also the name of
//! MeteorApp `shop-app`'s front Service. The cache of the operator's objects holds both apps'
//! children; a child is this app's only if its controller reference is this app's uid.

mod support;

use http::Method;
use support::cluster::{Cluster, reconcile_again};
use support::{Expect, TestApp, app, condition, mongo_secret, not_found};

const SECRET: &str = "/api/v1/namespaces/default/secrets/todos-mongo";
const STATUS: &str = "/apis/meteorfleet.dev/v1alpha1/namespaces/default/meteorapps/shop-app/status";

/// A MeteorApp with the proxy on (the default), named `name`, with a uid of its own.
fn shop(name: &str) -> TestApp {
    app()
        .with_proxy()
        .name(name)
        .image("ghcr.io/example/shop:1.0.0")
        .root_url(&format!("https://{name}.example.com"))
        .uid(&format!("uid-{name}"))
}

/// `shop` runs with its proxy; `shop-app` arrives. Its front Service would be `shop`'s app
/// Service, which `shop`'s proxies follow: refused, naming both apps, and nothing written.
#[tokio::test]
async fn an_app_named_after_anothers_child_is_refused_and_writes_nothing() {
    let cluster = Cluster::applied(&shop("shop").build(), 2);
    let intruder = shop("shop-app").build();
    let script = vec![
        Expect::get(SECRET, mongo_secret()),
        // Its app Deployment `shop-app` is nobody's: looked up, not there.
        Expect::get(
            "/apis/apps/v1/namespaces/default/deployments/shop-app",
            not_found("deployments", "shop-app"),
        ),
        // Its front Service `shop-app` is in the cache: `shop`'s. No request, a refusal.
        Expect::status(&intruder),
        Expect::event(),
    ];
    let transcript = cluster.reconcile(intruder, script).await;
    assert_eq!(
        transcript.writes(),
        vec![
            format!("PATCH {STATUS}"),
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_string()
        ]
    );
    let status = transcript.body_of(Method::PATCH, STATUS);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "NameConflict");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("Service default/shop-app already exists and belongs to MeteorApp shop, not to MeteorApp shop-app"),
        "{message}"
    );
}

/// The same cache, the app that owns the children: nothing is refused and nothing written.
#[tokio::test]
async fn the_owner_of_those_children_goes_on_as_before() {
    let owner = shop("shop").settled().build();
    let transcript = reconcile_again(&owner, vec![Expect::get(SECRET, mongo_secret())]).await;
    assert_eq!(transcript.writes(), Vec::<String>::new());
}
