//! Leader election: the Lease holder identity of this process and the lease manager `run` builds.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};

/// Seconds a Lease taken by this process lasts without renewal.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews it.
pub const LEASE_GRACE_SECONDS: u64 = 5;

/// Which Lease to take, and its timing.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

impl LeaseSettings {
    /// The Lease `namespace/name` with the operator's timing.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            duration_seconds: LEASE_DURATION_SECONDS,
            grace_seconds: LEASE_GRACE_SECONDS,
        }
    }
}

/// This process's holder identity: `<pod or host name>_<random UUID>`, as controller-runtime
/// builds it. The name alone is not unique: two processes on one host (hostNetwork pods, a
/// local process beside an in-cluster one) would both believe they hold the Lease.
pub fn holder_identity() -> String {
    let name = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(hostname);
    format!("{name}_{}", random_uuid())
}

/// The lease manager of this process, and its identity; `run` and the tests build it here.
pub async fn lease_manager(
    client: Client,
    settings: &LeaseSettings,
) -> Result<(LeaseManager, String), LeaseManagerError> {
    let identity = holder_identity();
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .build()
        .await?;
    Ok((manager, identity))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "meteor-operator".to_string())
}

/// A version-4 UUID from the OS CSPRNG.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_the_host_name_and_a_fresh_v4_uuid() {
        let (a, b) = (holder_identity(), holder_identity());
        assert_ne!(a, b);
        let (name_a, uuid_a) = a.rsplit_once('_').expect("name_uuid");
        let (name_b, _) = b.rsplit_once('_').expect("name_uuid");
        assert_eq!(name_a, name_b);
        assert!(!name_a.is_empty());
        let groups: Vec<usize> = uuid_a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid_a}");
        assert!(uuid_a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&uuid_a[14..15], "4", "version 4: {uuid_a}");
        assert!(
            "89ab".contains(&uuid_a[19..20]),
            "RFC 4122 variant: {uuid_a}"
        );
    }
}
