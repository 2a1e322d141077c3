//! `meteor-operator render`: every object the operator would create for the MeteorApps in a
//! file, offline. The same validation as the API and the reconcile backstop runs first, so bad
//! input fails here with the apiserver's messages.
//!
//! Offline there is no Secret data, so the pod template's config hash is computed from the
//! references alone, and owner references carry a placeholder uid (the API server assigns it).

use crate::api::MeteorApp;
use crate::build::mongo::MongoTier;
use crate::build::{self, Desired, Inputs, MongoWiring};
use crate::controller::stamped;
use crate::references::offline_hash;
use crate::validate::validate;
use anyhow::{Context, bail};
use kube::ResourceExt;
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// Stand-in for the uid the API server gives a MeteorApp.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Renders the MeteorApps in `path` ("-" for standard input) to multi-document YAML.
pub fn render_file(path: &Path) -> anyhow::Result<String> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    render_str(&text).with_context(|| format!("{}", path.display()))
}

/// Renders every MeteorApp document in `text`.
pub fn render_str(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut count = 0;
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("document {}: not valid YAML", index + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "MeteorApp" {
            bail!(
                "document {}: kind is {kind:?}, expected MeteorApp",
                index + 1
            );
        }
        let app: MeteorApp = serde_json::from_value(value)
            .with_context(|| format!("document {}: not a valid MeteorApp", index + 1))?;
        out.push_str(&render_app(app)?);
        count += 1;
    }
    if count == 0 {
        bail!("no MeteorApp found");
    }
    Ok(out)
}

/// Every child of one MeteorApp, as YAML documents.
pub fn render_app(mut app: MeteorApp) -> anyhow::Result<String> {
    let name = app.name_any();
    validate(&app)
        .map_err(|problem| anyhow::anyhow!("MeteorApp {name:?} is invalid: {problem}"))?;
    app.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    app.metadata
        .uid
        .get_or_insert_with(|| PLACEHOLDER_UID.into());
    let mongo = MongoWiring::for_app(&app)
        .ok_or_else(|| anyhow::anyhow!("MeteorApp {name:?}: spec.mongo names no MongoDB"))?;
    let inputs = Inputs {
        config_hash: offline_hash(&app),
        mongo,
    };
    // Generated credentials are placeholders: the real ones are drawn from the CSPRNG once,
    // when the operator creates the Secrets.
    let placeholders = &mut crate::build::mongo::secrets::Placeholder;
    // Every field by name: a kind added to `Desired` does not compile until it is rendered.
    let Desired {
        app: app_deployment,
        service,
        worker,
        disruption_budget,
        routing,
        autoscaler,
        mongo,
        pod_monitor,
    } = build::desired_with(&app, &inputs, &build::Options::default(), placeholders);
    let mut out = String::new();
    push_yaml(&mut out, &stamped(app_deployment))?;
    push_yaml(&mut out, &stamped(service))?;
    if let Some(worker) = worker {
        push_yaml(&mut out, &stamped(worker))?;
    }
    if let Some(autoscaler) = autoscaler {
        push_yaml(&mut out, &stamped(autoscaler))?;
    }
    if let Some(budget) = disruption_budget {
        push_yaml(&mut out, &stamped(budget))?;
    }
    render_routing(&mut out, &app, routing)?;
    if let Some(monitor) = pod_monitor {
        push_yaml(&mut out, &stamped(monitor))?;
    }
    if let Some(tier) = mongo {
        render_mongo(&mut out, &app, tier)?;
    }
    Ok(out)
}

/// The routing tier. The cookie key is a placeholder: the real one is drawn from the CSPRNG
/// once, when the operator creates the Secret.
fn render_routing(
    out: &mut String,
    app: &MeteorApp,
    routing: build::RoutingTier,
) -> anyhow::Result<()> {
    use crate::build::mongo::secrets::PLACEHOLDER_VALUE;
    if let Some(proxy) = routing.proxy {
        push_yaml(out, &stamped(proxy.app_service))?;
        push_yaml(out, &stamped(proxy.deployment))?;
        if let Some(budget) = proxy.disruption_budget {
            push_yaml(out, &stamped(budget))?;
        }
        push_yaml(out, &stamped(proxy.service_account))?;
        push_yaml(out, &stamped(proxy.role_binding))?;
        push_yaml(out, &build::routing::cookie_secret(app, PLACEHOLDER_VALUE))?;
    }
    if let Some(ingress) = routing.ingress {
        push_yaml(out, &stamped(ingress))?;
    }
    if let Some(route) = routing.http_route {
        push_yaml(out, &stamped(route))?;
    }
    if let Some(certificate) = routing.certificate {
        push_yaml(out, &stamped(certificate))?;
    }
    Ok(())
}

/// The managed-MongoDB tier. Generated values are placeholders: the real ones are drawn from
/// the CSPRNG once, when the operator creates the Secrets.
fn render_mongo(out: &mut String, app: &MeteorApp, tier: MongoTier) -> anyhow::Result<()> {
    use crate::build::mongo::SecretKind;
    use crate::build::mongo::secrets::{Credentials, PLACEHOLDER_VALUE};
    use crate::build::mongo::{default_username, urls_secret};
    push_yaml(out, &stamped(tier.statefulset))?;
    push_yaml(out, &stamped(tier.service))?;
    push_yaml(out, &stamped(tier.pdb))?;
    push_yaml(out, &stamped(tier.network_policy))?;
    for secret in &tier.create_once {
        push_yaml(out, secret)?;
    }
    let placeholder = |kind| Credentials {
        username: default_username(kind).into(),
        password: PLACEHOLDER_VALUE.into(),
    };
    let urls = urls_secret(
        app,
        &placeholder(SecretKind::App),
        &placeholder(SecretKind::Oplog),
    );
    push_yaml(out, &stamped(urls))
}

fn push_yaml<T: serde::Serialize>(out: &mut String, object: &T) -> anyhow::Result<()> {
    out.push_str("---\n");
    out.push_str(&serde_norway::to_string(object)?);
    Ok(())
}
