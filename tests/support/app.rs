//! A MeteorApp for a test, said in a line: `app().with_proxy().replicas(3).settled()`. It starts
//! from the core's minimal app (`todos`, two replicas, its Mongo URL from Secret `todos-mongo`,
//! the proxy off) and never reads a cluster.
//!
//! Steps apply in order: [`TestApp::settled`] writes the status a reconcile left for the spec as
//! it is at that point, so what comes after it is the user's edit the next reconcile sees.

use super::cluster::{earlier, settled as settled_routed};
use super::{minimal_app, settled as settled_over};
use k8s_openapi::api::apps::v1::Deployment;
use meteor_operator::api::{MeteorApp, MeteorAppSpec, MeteorAppStatus, RolloutStatus};
use meteor_operator::status::routing::RoutingObservation;

/// The minimal app, to be built up (see the module doc).
pub fn app() -> TestApp {
    TestApp(minimal_app())
}

/// A MeteorApp under construction; [`TestApp::build`] (or `.into()`) hands it over.
#[derive(Clone, Debug)]
pub struct TestApp(MeteorApp);

impl TestApp {
    /// The app renamed (its children's names follow), image and rootUrl left as they are.
    pub fn name(mut self, name: &str) -> Self {
        self.0.metadata.name = Some(name.into());
        self
    }

    /// The app renamed, with an image and rootUrl of that name too
    /// (`ghcr.io/example/NAME:1.0.0`, `https://NAME.example.com`).
    pub fn named(self, name: &str) -> Self {
        self.name(name)
            .image(&format!("ghcr.io/example/{name}:1.0.0"))
            .root_url(&format!("https://{name}.example.com"))
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.0.metadata.uid = Some(uid.into());
        self
    }

    /// `metadata.generation`: a spec edit after [`TestApp::settled`] bumps it.
    pub fn generation(mut self, generation: i64) -> Self {
        self.0.metadata.generation = Some(generation);
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.0.spec.image = image.into();
        self
    }

    pub fn root_url(mut self, url: &str) -> Self {
        self.0.spec.root_url = url.into();
        self
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.0.spec.replicas = replicas;
        self
    }

    /// `spec.workers.replicas`.
    pub fn workers(mut self, replicas: i32) -> Self {
        self.0.spec.workers.replicas = replicas;
        self
    }

    /// The sticky proxy in front, as a user gets it by default.
    pub fn with_proxy(mut self) -> Self {
        self.0.spec.routing = Default::default();
        self
    }

    /// The proxy turned off, nothing else in front (the minimal app's way in).
    pub fn without_proxy(self) -> Self {
        self.routing("{ proxy: { enabled: false } }")
    }

    /// `spec.routing` as written in YAML (the proxy on unless it says otherwise).
    pub fn routing(mut self, yaml: &str) -> Self {
        self.0.spec.routing = parse("spec.routing", yaml);
        self
    }

    /// `spec.autoscaling` as written in YAML, e.g. `{ maxReplicas: 10 }`.
    pub fn autoscaling(mut self, yaml: &str) -> Self {
        self.0.spec.autoscaling = Some(parse("spec.autoscaling", yaml));
        self
    }

    /// A replica set run by the operator (three members, every default) instead of the Mongo URL
    /// Secret.
    pub fn managed_mongo(self) -> Self {
        self.mongo_managed("{ members: 3 }")
    }

    /// `spec.mongo.managed` as written in YAML, e.g. `{ members: 1, storage: { size: 20Gi } }`.
    pub fn mongo_managed(mut self, yaml: &str) -> Self {
        self.0.spec.mongo.external = None;
        self.0.spec.mongo.managed = Some(parse("spec.mongo.managed", yaml));
        self
    }

    /// Any other change of the spec.
    pub fn spec(mut self, edit: impl FnOnce(&mut MeteorAppSpec)) -> Self {
        edit(&mut self.0.spec);
        self
    }

    /// The status a reconcile wrote once the app's children, as built from this spec, rolled
    /// out: Ready, the rollout history remembering that template, and every proxy serving.
    pub fn settled(self) -> Self {
        let proxies = meteor_operator::build::routing::proxy_replicas(&self.0).unwrap_or(0);
        self.settled_seeing(&RoutingObservation {
            proxy_ready: proxies,
            ..RoutingObservation::default()
        })
    }

    /// [`TestApp::settled`], the way in as `seen` (a TLS Secret checked, proxies not ready ...).
    pub fn settled_seeing(self, seen: &RoutingObservation) -> Self {
        let status = settled_routed(&self.0, seen);
        self.status(status)
    }

    /// The status a (proxy-less) reconcile wrote while the app ran `deployment`, its rollout
    /// history remembering that Deployment's template.
    pub fn settled_over(self, deployment: &Deployment) -> Self {
        let status = settled_over(&self.0, deployment, &earlier());
        self.status(status)
    }

    /// [`TestApp::settled_over`] with the rollout history given.
    pub fn settled_with_history(self, deployment: &Deployment, history: RolloutStatus) -> Self {
        let status = super::settled_with(&self.0, deployment, history, &earlier());
        self.status(status)
    }

    pub fn status(mut self, status: MeteorAppStatus) -> Self {
        self.0.status = Some(status);
        self
    }

    pub fn build(self) -> MeteorApp {
        self.0
    }
}

impl From<TestApp> for MeteorApp {
    fn from(app: TestApp) -> Self {
        app.0
    }
}

fn parse<T: serde::de::DeserializeOwned>(field: &str, yaml: &str) -> T {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{field} fixture: {e}"))
}
