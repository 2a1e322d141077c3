//! The Secrets and ConfigMaps an app references, read for its config hash: fetched with one GET
//! each, unless every one is still at the resource version it had when the app's references last
//! resolved (the metadata watches say), in which case that result is reused without a request.
//! No Secret data is kept in memory: only versions and the resulting hash.

use super::index::{Resolved, Source};
use super::{Context, Error, ListedApp, Step};
use crate::api::MeteorApp;
use crate::problem::Problem;
use crate::references::{self, Fetched, SourceKind};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeMap;

/// The config hash of `app`'s references, or the problem with them.
pub async fn resolve(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<String, Problem>, Error> {
    let key = ObjectRef::<ListedApp>::new(&app.name_any()).within(namespace);
    if let Some(resolved) = ctx.index.resolved(&key)
        && resolved.generation == app.metadata.generation
        && resolved
            .versions
            .iter()
            .all(|(source, version)| ctx.current_version(source) == *version)
    {
        return Ok(resolved.result);
    }
    let (fetched, versions) = fetch(app, ctx, namespace).await?;
    let result = references::resolve(app, &fetched);
    if !versions.is_empty() {
        ctx.index.remember(
            &key,
            Resolved {
                generation: app.metadata.generation,
                versions,
                result: result.clone(),
            },
        );
    }
    Ok(result)
}

/// GETs each referenced object once: its data, and the resource version it was read at.
async fn fetch(
    app: &MeteorApp,
    ctx: &Context,
    namespace: &str,
) -> Result<(Fetched, Vec<(Source, Option<String>)>), Error> {
    let mut fetched = Fetched::new();
    let mut versions = Vec::new();
    for reference in references::references(app) {
        let key = (reference.kind, reference.name.clone());
        // An empty name cannot be fetched; `resolve` reports it.
        if reference.name.is_empty() || fetched.contains_key(&key) {
            continue;
        }
        let (data, version) = match reference.kind {
            SourceKind::Secret => {
                let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                    .get_opt(&reference.name)
                    .await
                    .map_err(Error::at(Step::References))?;
                let version = secret.as_ref().and_then(|s| s.resource_version());
                (secret.map(secret_data), version)
            }
            SourceKind::ConfigMap => {
                let config_map = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
                    .get_opt(&reference.name)
                    .await
                    .map_err(Error::at(Step::References))?;
                let version = config_map.as_ref().and_then(|c| c.resource_version());
                (config_map.map(config_map_data), version)
            }
        };
        versions.push((
            (reference.kind, namespace.to_string(), reference.name),
            version,
        ));
        fetched.insert(key, data);
    }
    Ok((fetched, versions))
}

fn secret_data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn config_map_data(config_map: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = config_map
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(
        config_map
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    data
}
