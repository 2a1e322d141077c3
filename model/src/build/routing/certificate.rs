//! The cert-manager `Certificate` `<name>` for the rootUrl host, with `routing.tls.issuerRef`;
//! cert-manager stores it in Secret `<name>-tls`, which the proxy or the Ingress serves.
//! Typed here with only the fields we write (cert-manager publishes no Rust types).

use super::{RootUrl, tls_secret_name};
use crate::api::MeteorApp;
use crate::build::meta::{app_name, child_meta};
use crate::build::service::front_component;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The subset of cert-manager's `CertificateSpec` the operator writes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    status = "CertificateStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    pub issuer_ref: CertificateIssuerRef,
}

/// What cert-manager reports, as far as the operator reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CertificateStatus {
    #[serde(default)]
    pub conditions: Vec<super::httproute::ForeignCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CertificateIssuerRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// The Certificate, with `routing.tls.issuerRef`.
pub fn certificate(app: &MeteorApp) -> Option<Certificate> {
    let issuer = app.spec.routing.tls.as_ref()?.issuer_ref.as_ref()?;
    let root = RootUrl::of(app);
    let (dns_names, ip_addresses) = if root.host_is_ip {
        (Vec::new(), vec![root.host])
    } else {
        (vec![root.host], Vec::new())
    };
    let spec = CertificateSpec {
        secret_name: tls_secret_name(app)?,
        dns_names,
        ip_addresses,
        issuer_ref: CertificateIssuerRef {
            group: "cert-manager.io".into(),
            kind: issuer.kind.clone(),
            name: issuer.name.clone(),
        },
    };
    let mut certificate = Certificate::new(&app_name(app), spec);
    certificate.metadata = child_meta(app, app_name(app), front_component(app).as_str());
    Some(certificate)
}
