//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager 0.13).
//!
//! [`run_as_leader`] waits until this replica holds the Lease, runs the work with a shutdown
//! future, and resolves that future when leadership is lost or SIGTERM/SIGINT arrives. Once the
//! work has drained (or [`LeaseSettings::drain_timeout`] passed) the Lease is released and the
//! function returns; after a loss of leadership it returns [`LeaderError::LeadershipLost`], so the
//! process exits and restarts as a candidate.
//!
//! Timing with the defaults (duration 15 s, grace 5 s): the holder renews every 10 s; a candidate
//! takes an unrenewed Lease over 15 s after the last renewal (plus up to ~1 s of jitter), so a
//! dead leader is replaced within ~16 s.
//!
//! Fencing: kube-lease-manager only reports a loss after it could read the Lease again, so a
//! leader cut off from the apiserver would keep working while another replica takes over. A
//! separate guard therefore reads the Lease after each due renewal and treats leadership as lost
//! when it cannot confirm a renewal by `renewTime + duration - grace/2` (2.5 s before any
//! candidate may take over), or when the Lease names another holder.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Default lease duration: a dead leader is replaced within ~16 s.
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;
/// Default grace: the holder renews this long before expiry (also the tolerated clock skew).
pub const DEFAULT_LEASE_GRACE_SECONDS: u64 = 5;
/// Default bound on how long the work may take to drain after its shutdown future resolved.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the Lease release when stepping down.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The future handed to the work: it resolves when the work must stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Which Lease to hold and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's `holderIdentity`; unique among the replicas (pod name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long a Lease stays valid after its last renewal (>= 2).
    pub duration_seconds: u64,
    /// The holder renews this long before expiry (>= 1, < `duration_seconds`).
    pub grace_seconds: u64,
    /// Bound on the work's drain after its shutdown future resolved; the Lease is released and
    /// the function returns even if the work has not finished by then.
    pub drain_timeout: Duration,
}

impl LeaseSettings {
    /// Settings with the default duration (15 s), grace (5 s) and drain timeout (20 s).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration_seconds: DEFAULT_LEASE_DURATION_SECONDS,
            grace_seconds: DEFAULT_LEASE_GRACE_SECONDS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Sets the lease duration and grace, in seconds.
    pub fn with_timing(mut self, duration_seconds: u64, grace_seconds: u64) -> Self {
        self.duration_seconds = duration_seconds;
        self.grace_seconds = grace_seconds;
        self
    }

    /// Checks what kube-lease-manager would otherwise panic on or misbehave with.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason: String| Err(LeaderError::InvalidSettings(reason));
        if self.name.is_empty() {
            return invalid("the lease name is empty".into());
        }
        if self.namespace.is_empty() {
            return invalid("the lease namespace is empty".into());
        }
        if self.identity.is_empty() {
            return invalid("the identity is empty".into());
        }
        if self.grace_seconds == 0 {
            return invalid("the lease grace must be at least 1 second".into());
        }
        if self.duration_seconds <= self.grace_seconds {
            return invalid(format!(
                "the lease duration ({} s) must be longer than the grace ({} s)",
                self.duration_seconds, self.grace_seconds
            ));
        }
        if self.duration_seconds > i32::MAX as u64 {
            return invalid(format!(
                "the lease duration ({} s) is too long",
                self.duration_seconds
            ));
        }
        Ok(())
    }
}

/// Why [`run_as_leader`] failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    InvalidSettings(String),
    #[error("cannot use the Lease {namespace}/{name}: {message}")]
    Lease {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("the lease manager of Lease {namespace}/{name} stopped unexpectedly: {message}")]
    ManagerStopped {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "lost the leadership of Lease {namespace}/{name}: {reason}; exiting so that this replica restarts as a candidate"
    )]
    LeadershipLost {
        namespace: String,
        name: String,
        reason: String,
    },
    /// The work itself failed.
    #[error("{0}")]
    Work(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn lease_manager_message(error: &LeaseManagerError) -> String {
    match error {
        LeaseManagerError::KubeError(kube) => crate::util::kube_error_message(kube),
        other => other.to_string(),
    }
}

/// Runs `work` while this replica holds the Lease; SIGTERM/SIGINT stop it (see the module docs).
pub async fn run_as_leader<F, Fut, E>(
    client: Client,
    lease: LeaseSettings,
    work: F,
) -> Result<(), LeaderError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    run_as_leader_until(client, lease, crate::util::shutdown_signal(), work).await
}

/// Like [`run_as_leader`], with `stop` in place of the process signals (it plays the part of
/// SIGTERM: the work drains, the Lease is released, the function returns `Ok`).
pub async fn run_as_leader_until<S, F, Fut, E>(
    client: Client,
    lease: LeaseSettings,
    stop: S,
    work: F,
) -> Result<(), LeaderError>
where
    S: Future<Output = ()>,
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    lease.validate()?;
    let lease_error = |message: String| LeaderError::Lease {
        namespace: lease.namespace.clone(),
        name: lease.name.clone(),
        message,
    };

    let manager = LeaseManagerBuilder::new(client.clone(), lease.name.clone())
        .with_namespace(lease.namespace.clone())
        .with_identity(lease.identity.clone())
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .build()
        .await
        .map_err(|e| lease_error(lease_manager_message(&e)))?;
    let (mut is_leader, manager_task) = manager.watch().await;
    let mut stop = pin!(stop);

    info!(
        lease = %lease.name,
        namespace = %lease.namespace,
        identity = %lease.identity,
        "waiting for leadership"
    );
    let acquired = tokio::select! {
        changed = is_leader.wait_for(|leader| *leader) => Some(changed.is_ok()),
        () = &mut stop => None,
    };
    match acquired {
        Some(true) => {}
        Some(false) => {
            let message = manager_task_outcome(manager_task).await;
            return Err(LeaderError::ManagerStopped {
                namespace: lease.namespace.clone(),
                name: lease.name.clone(),
                message,
            });
        }
        None => {
            info!("shutdown requested while waiting for leadership");
            drop(is_leader);
            finish_manager(manager_task, &lease).await;
            return Ok(());
        }
    }
    info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "acquired leadership");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let shutdown: Shutdown = Box::pin(async move {
        // Resolves on `true`, or when the sender is gone.
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });

    let ending = {
        let mut work = pin!(work(shutdown));
        let mut guard = pin!(fence(
            Api::<Lease>::namespaced(client, &lease.namespace),
            lease.clone()
        ));
        let far_future = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        let mut drain_deadline = pin!(tokio::time::sleep_until(far_future));
        let mut ending: Option<Ending> = None;
        let begin_drain = |reason: Ending, deadline: Pin<&mut tokio::time::Sleep>| {
            let _ = stop_tx.send(true);
            deadline.reset(Instant::now() + lease.drain_timeout);
            reason
        };

        let work_result = loop {
            tokio::select! {
                result = &mut work => break Some(result),
                lost = is_leader.wait_for(|leader| !*leader), if ending.is_none() => {
                    let reason = match lost {
                        Ok(_) => "another replica holds the Lease".to_owned(),
                        Err(_) => "the lease manager stopped".to_owned(),
                    };
                    warn!(%reason, "leadership lost; stopping the controllers");
                    ending = Some(begin_drain(Ending::Lost(reason), drain_deadline.as_mut()));
                }
                reason = &mut guard, if ending.is_none() => {
                    warn!(%reason, "cannot confirm leadership; stopping the controllers");
                    ending = Some(begin_drain(Ending::Lost(reason), drain_deadline.as_mut()));
                }
                () = &mut stop, if ending.is_none() => {
                    info!("shutdown requested; draining the controllers");
                    ending = Some(begin_drain(Ending::Stopped, drain_deadline.as_mut()));
                }
                () = &mut drain_deadline, if ending.is_some() => {
                    warn!(timeout = ?lease.drain_timeout, "the controllers did not drain in time; stopping them");
                    break None;
                }
            }
        };
        // The work future is dropped at the end of this block, before the Lease is released.
        (ending, work_result)
    };

    drop(is_leader);
    finish_manager(manager_task, &lease).await;

    let (ending, work_result) = ending;
    let work_result = work_result.map(|r| r.map_err(|e| LeaderError::Work(Box::new(e))));
    match ending {
        Some(Ending::Lost(reason)) => {
            if let Some(Err(error)) = work_result {
                error!(%error, "the controllers failed while stepping down");
            }
            Err(LeaderError::LeadershipLost {
                namespace: lease.namespace.clone(),
                name: lease.name.clone(),
                reason,
            })
        }
        Some(Ending::Stopped) => work_result.unwrap_or(Ok(())),
        None => {
            // The work ended on its own while this replica was the leader.
            work_result.unwrap_or(Ok(()))
        }
    }
}

enum Ending {
    /// Leadership was lost (or could not be confirmed).
    Lost(String),
    /// Shutdown was requested.
    Stopped,
}

/// Waits for the lease manager task after every receiver was dropped: it releases the Lease if
/// this replica holds it.
async fn finish_manager(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    lease: &LeaseSettings,
) {
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => {
            info!(lease = %lease.name, namespace = %lease.namespace, "left the Lease (released if this replica held it)")
        }
        Ok(Ok(Err(error))) => warn!(
            lease = %lease.name,
            error = %lease_manager_message(&error),
            "cannot release the Lease; it expires on its own"
        ),
        Ok(Err(error)) => warn!(lease = %lease.name, %error, "the lease manager task failed"),
        Err(_) => {
            warn!(lease = %lease.name, "releasing the Lease timed out; it expires on its own")
        }
    }
}

/// What a lease manager task that ended on its own reports.
async fn manager_task_outcome(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> String {
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => "it ended without an error".to_owned(),
        Ok(Ok(Err(error))) => lease_manager_message(&error),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "it stopped publishing its state".to_owned(),
    }
}

/// Resolves, with the reason, as soon as this replica can no longer prove it holds the Lease
/// (see the module docs). Started right after the lease manager reported leadership.
async fn fence(api: Api<Lease>, lease: LeaseSettings) -> String {
    let duration = Duration::from_secs(lease.duration_seconds);
    let grace = Duration::from_secs(lease.grace_seconds);
    let renew_after = duration.saturating_sub(grace);
    let margin = grace / 2;
    // Between the due renewal and the deadline lie grace/2; poll four times in that window.
    let step = (grace / 8).max(Duration::from_millis(50));

    // The Lease was acquired or renewed no later than now.
    let mut deadline = SystemTime::now() + duration.saturating_sub(margin);
    let mut next_poll = SystemTime::now();
    loop {
        let now = SystemTime::now();
        let wait = next_poll
            .min(deadline)
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;

        let now = SystemTime::now();
        let Ok(remaining) = deadline.duration_since(now) else {
            return "the Lease could not be confirmed as renewed in time (apiserver unreachable or too slow)"
                .to_owned();
        };
        next_poll = now + step;
        match tokio::time::timeout(remaining, api.get(&lease.name)).await {
            Ok(Ok(current)) => {
                let spec = current.spec.unwrap_or_default();
                match spec.holder_identity.as_deref() {
                    Some(holder) if holder == lease.identity => {}
                    Some(holder) => return format!("the Lease is now held by {holder}"),
                    None => return "the Lease was released by another replica".to_owned(),
                }
                if let Some(renewed) = spec.renew_time {
                    let renewed: SystemTime = renewed.0.into();
                    deadline = renewed + duration.saturating_sub(margin);
                    next_poll = next_poll.max(renewed + renew_after + step);
                }
            }
            Ok(Err(error)) => {
                debug!(error = %crate::util::kube_error_message(&error), "cannot read the Lease");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds a 2 s Lease for 6 s (several renewals), then stops: the guard must not fire and the
    /// Lease must be released. Run with `KUBECONFIG=... cargo test -- --ignored leader::`.
    #[tokio::test]
    #[ignore = "needs a kube-apiserver (KUBECONFIG)"]
    async fn short_lease_is_held_renewed_and_released() {
        let client = Client::try_default().await.expect("kube client");
        let name = format!("leader-unit-{}", std::process::id());
        let settings = LeaseSettings::new(&name, "default", "unit-a").with_timing(2, 1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ran_tx, ran_rx) = tokio::sync::oneshot::channel::<Duration>();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let _ = stop_tx.send(());
        });
        let result = run_as_leader_until(
            client.clone(),
            settings,
            async move {
                let _ = stop_rx.await;
            },
            |shutdown| async move {
                let started = std::time::Instant::now();
                shutdown.await;
                let _ = ran_tx.send(started.elapsed());
                Ok::<(), std::io::Error>(())
            },
        )
        .await;
        stopper.await.expect("stopper");
        result.expect("no error");
        let ran = ran_rx.await.expect("work ran");
        assert!(
            ran >= Duration::from_secs(5),
            "work stopped early after {ran:?}"
        );
        let lease = Api::<Lease>::namespaced(client, "default")
            .get(&name)
            .await
            .expect("lease");
        assert_eq!(lease.spec.and_then(|s| s.holder_identity), None);
    }

    #[test]
    fn defaults_meet_the_takeover_budget() {
        let settings = LeaseSettings::new("versori-operator", "ns", "pod-a");
        assert!(settings.validate().is_ok());
        // A candidate takes over at most duration + ~1 s after the last renewal.
        assert!(settings.duration_seconds < 20);
        assert!(settings.grace_seconds <= 5);
    }

    #[test]
    fn invalid_timings_are_refused() {
        let base = LeaseSettings::new("l", "ns", "id");
        for (duration, grace) in [(5, 0), (5, 5), (3, 4), (0, 0)] {
            let error = base
                .clone()
                .with_timing(duration, grace)
                .validate()
                .expect_err("invalid");
            assert!(
                error
                    .to_string()
                    .starts_with("invalid leader election settings"),
                "{error}"
            );
        }
        assert!(base.clone().with_timing(2, 1).validate().is_ok());
        assert!(LeaseSettings::new("", "ns", "id").validate().is_err());
        assert!(LeaseSettings::new("l", "ns", "").validate().is_err());
    }
}
