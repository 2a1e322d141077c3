//! Leader election: the Lease holder identity of this process, the lease manager `run` builds,
//! and the renewal deadline past which a leader stops acting.
//!
//! kube-lease-manager keeps a leader leading while its renewals fail (it logs and retries), so a
//! leader cut off from the API server would go on reconciling after a standby took the expired
//! Lease: two leaders, both reconfiguring the same Mongo replica sets. [`Renewals`] records each
//! write of the Lease the API server confirmed, and `run` exits once [`RENEW_DEADLINE`] passed
//! without one, before the Lease can expire for anyone else.

use http::{Method, Request};
use kube::Client;
use kube::client::Body;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Seconds a Lease taken by this process lasts without renewal.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry at which the holder renews it: a renewal every 7 s.
pub const LEASE_GRACE_SECONDS: u64 = 8;
/// Longest the leader acts past its last confirmed write of the Lease: 3 s before the Lease
/// expires for a standby (controller-runtime's renew deadline, for the same reason).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(12);
/// Longest one request about the Lease may take, so a stalled one fails well within the deadline.
pub const LEASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// When the API server last confirmed a write of the Lease by this process (taken, renewed).
#[derive(Clone, Default)]
pub struct Renewals(Arc<Mutex<Option<Instant>>>);

impl Renewals {
    /// `client` as the lease manager uses it: each request bounded by [`LEASE_REQUEST_TIMEOUT`],
    /// each successful write recorded at the instant it was sent (the `renewTime` it carries).
    pub fn observe(&self, client: Client) -> Client {
        let renewals = self.clone();
        let namespace = client.default_namespace().to_string();
        let service = tower::service_fn(move |request: Request<Body>| {
            let (client, renewals) = (client.clone(), renewals.clone());
            async move {
                let write = matches!(
                    *request.method(),
                    Method::POST | Method::PATCH | Method::PUT
                );
                let sent = Instant::now();
                let response = tokio::time::timeout(LEASE_REQUEST_TIMEOUT, client.send(request))
                    .await
                    .map_err(|_| {
                        format!("the API server did not answer about the Lease within {LEASE_REQUEST_TIMEOUT:?}")
                    })??;
                if write && response.status().is_success() {
                    renewals.confirmed(sent);
                }
                Ok::<_, tower::BoxError>(response)
            }
        });
        Client::new(service, namespace)
    }

    fn confirmed(&self, at: Instant) {
        let mut last = self.0.lock().expect("lock is never poisoned");
        if last.is_none_or(|last| last < at) {
            *last = Some(at);
        }
    }

    /// Resolves once `deadline` has passed since the last confirmed write (or since now, if
    /// there was none).
    pub async fn lapse(&self, deadline: Duration) {
        let started = Instant::now();
        loop {
            let last = self
                .0
                .lock()
                .expect("lock is never poisoned")
                .unwrap_or(started);
            let due = last + deadline;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

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

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_last_confirmed_write() {
        let renewals = Renewals::default();
        let started = Instant::now();
        renewals.confirmed(started);
        let lapse = tokio::spawn({
            let renewals = renewals.clone();
            async move { renewals.lapse(RENEW_DEADLINE).await }
        });
        tokio::time::sleep(Duration::from_secs(7)).await;
        renewals.confirmed(Instant::now());
        // An older confirmation arriving late does not move it back.
        renewals.confirmed(started);
        lapse.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(7) + RENEW_DEADLINE);
    }

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
