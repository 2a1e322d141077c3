//! The one holder of a Kubernetes client: the few requests the plugin makes, each bounded by
//! `--request-timeout` from sending it to the last byte of the answer. Never a watch, never a
//! write to anything but a MeteorApp.

use crate::cli::Target;
use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt, Limited};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use meteor_operator::api::MeteorApp;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;

/// Largest answer a proxy's status page may give: one line per backend, a few hundred bytes each.
/// The pod's image is its owner's to choose, so what it answers is read up to this and no further.
pub const MAX_PROXY_STATUS_BYTES: usize = 1 << 20;

/// Longest one proxy may take to answer, however long `--request-timeout` is: a proxy that
/// cannot say how many sessions it holds within this is reported as not answering.
pub const PROXY_ASK_LIMIT: Duration = Duration::from_secs(5);

/// A connection to one cluster, in one namespace.
pub struct Cluster {
    client: kube::Client,
    /// The namespace commands act in (`-n`, else the context's).
    pub namespace: String,
    timeout: Duration,
}

impl Cluster {
    /// Connects as kubectl would with the same flags: `--kubeconfig`, else `$KUBECONFIG` (a list
    /// of files, merged), else `~/.kube/config`, else the in-cluster service account.
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            cluster: target.cluster.clone(),
            user: target.user.clone(),
        };
        let named =
            options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let mut config = match &target.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if named => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer().await.context(
                "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not in a cluster",
            )?,
        };
        config.connect_timeout = Some(target.request_timeout);
        config.read_timeout = Some(target.request_timeout);
        config.write_timeout = Some(target.request_timeout);
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)?;
        Ok(Self {
            client,
            namespace,
            timeout: target.request_timeout,
        })
    }

    /// `request` within `limit`; the API's own error is left to the caller.
    async fn within<T>(
        &self,
        what: &str,
        limit: Duration,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> anyhow::Result<Result<T, kube::Error>> {
        tokio::time::timeout(limit, request).await.map_err(|_| {
            anyhow!(
                "{what}: no answer from the API server within {}",
                seconds(limit)
            )
        })
    }

    /// `request` within the request timeout, any error explained.
    async fn bounded<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> anyhow::Result<T> {
        self.within(what, self.timeout, request)
            .await?
            .map_err(|e| explain(what, e))
    }

    fn apps(&self) -> Api<MeteorApp> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// GET one MeteorApp.
    pub async fn app(&self, name: &str) -> anyhow::Result<MeteorApp> {
        let what = format!("get meteorapp {name} in namespace {}", self.namespace);
        match self
            .within(&what, self.timeout, self.apps().get(name))
            .await?
        {
            Ok(app) => Ok(app),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                bail!("meteorapp {name} not found in namespace {}", self.namespace)
            }
            Err(error) => Err(explain(&what, error)),
        }
    }

    /// LIST the MeteorApps of the namespace, or of every namespace.
    pub async fn list_apps(&self, all_namespaces: bool) -> anyhow::Result<Vec<MeteorApp>> {
        let api: Api<MeteorApp> = if all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.apps()
        };
        let what = if all_namespaces {
            "list meteorapps in every namespace".to_string()
        } else {
            format!("list meteorapps in namespace {}", self.namespace)
        };
        let list = self
            .bounded(&what, api.list(&ListParams::default()))
            .await?;
        Ok(list.items)
    }

    /// LIST the pods of one app (every tier), by the labels the operator gives them.
    pub async fn pods(&self, app: &str) -> anyhow::Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/name=meteor,app.kubernetes.io/instance={app}");
        let what = format!("list pods of {app} in namespace {}", self.namespace);
        let list = self
            .bounded(&what, api.list(&ListParams::default().labels(&selector)))
            .await?;
        Ok(list.items)
    }

    /// A JSON merge patch (RFC 7386) of one MeteorApp; the app as stored afterwards. A 409 (the
    /// patch's `metadata.resourceVersion` no longer current) is [`Conflict`].
    pub async fn patch_app(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> anyhow::Result<Result<MeteorApp, Conflict>> {
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let what = format!("patch meteorapp {name} in namespace {}", self.namespace);
        let apps = self.apps();
        match self
            .within(
                &what,
                self.timeout,
                apps.patch(name, &params, &Patch::Merge(patch)),
            )
            .await?
        {
            Ok(app) => Ok(Ok(app)),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Err(Conflict(status.message)))
            }
            Err(error) => Err(explain(&what, error)),
        }
    }

    /// GET `path` of a pod's `port` through the API server's pod proxy
    /// (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH`), as JSON, within
    /// [`PROXY_ASK_LIMIT`] and at most [`MAX_PROXY_STATUS_BYTES`].
    pub async fn pod_proxy_json<T: DeserializeOwned>(
        &self,
        pod: &str,
        port: u16,
        path: &str,
    ) -> Result<T, String> {
        let limit = self.timeout.min(PROXY_ASK_LIMIT);
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{port}/proxy/{}",
            self.namespace,
            path.trim_start_matches('/')
        );
        let exchange = async {
            let request = http::Request::get(&uri)
                .header(http::header::ACCEPT, "application/json")
                .body(kube::client::Body::from(Vec::new()))
                .map_err(|e| e.to_string())?;
            let response = self.client.send(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_PROXY_STATUS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{e} (at most {MAX_PROXY_STATUS_BYTES} bytes are read)"))?
                .to_bytes();
            if !status.is_success() {
                return Err(api_refusal(status, &body));
            }
            serde_json::from_slice::<T>(&body).map_err(|e| format!("not a proxy status page: {e}"))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| format!("no answer within {}", seconds(limit)))?
    }
}

/// `what` failed: the API's own message (which names verb, resource and namespace on a 403).
fn explain(what: &str, error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) if status.code == 403 => anyhow!(
            "{what}: forbidden: {} (docs/kubectl-meteor.md lists the verbs each command needs)",
            status.message
        ),
        kube::Error::Api(status) => anyhow!("{what}: HTTP {}: {}", status.code, status.message),
        error => anyhow!(error).context(what.to_string()),
    }
}

/// The API server refused a write because the object changed since it was read.
#[derive(Debug)]
pub struct Conflict(pub String);

/// What an error answer of the pod proxy says: the API server's own Status message when it
/// gives one (403, 404, 503), else the status line and the start of the body.
fn api_refusal(status: http::StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Status {
        message: String,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if status == http::StatusCode::FORBIDDEN => format!("forbidden: {}", s.message),
        Ok(s) => format!("HTTP {}: {}", status.as_u16(), s.message),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            format!("HTTP {}: {}", status.as_u16(), text.trim())
        }
    }
}

/// `30 s`, `1.5 s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}
