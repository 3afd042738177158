//! Short-lived caches of Versori listings that many reconciles share: an environment's
//! connection templates (every ProjectSystem and Connection of the environment reads them) and
//! a project's environments. Concurrent readers of one key wait for a single fetch; the
//! operator's own writes invalidate the key, and a fetch that began before an invalidation does
//! not store its (older) answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Listings by key, each kept for `ttl`.
pub struct Listings<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<V>>>,
}

struct Entry<V> {
    generation: u64,
    value: Option<(Instant, Arc<V>)>,
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl<V> Default for Entry<V> {
    fn default() -> Self {
        Self {
            generation: 0,
            value: None,
            fetching: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl<V> Listings<V> {
    /// Listings kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<V>>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn fresh(&self, entry: &Entry<V>) -> Option<Arc<V>> {
        entry
            .value
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| Arc::clone(value))
    }

    /// The listing of `key`, fetched with `fetch` unless a fresh one is kept.
    pub async fn get<E, Fut>(&self, key: &str, fetch: impl FnOnce() -> Fut) -> Result<Arc<V>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let fetching = {
            let mut entries = self.lock();
            let entry = entries.entry(key.to_owned()).or_default();
            if let Some(value) = self.fresh(entry) {
                return Ok(value);
            }
            Arc::clone(&entry.fetching)
        };
        let _one_fetch = fetching.lock().await;
        let generation = {
            let mut entries = self.lock();
            let entry = entries.entry(key.to_owned()).or_default();
            if let Some(value) = self.fresh(entry) {
                return Ok(value);
            }
            entry.generation
        };
        let value = Arc::new(fetch().await?);
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        if entry.generation == generation {
            entry.value = Some((Instant::now(), Arc::clone(&value)));
        }
        Ok(value)
    }

    /// Forgets the listing of `key` (the operator changed what it lists).
    pub fn invalidate(&self, key: &str) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.generation += 1;
            entry.value = None;
        }
    }
}

/// The key of a project environment's listing.
pub fn environment_key(project_id: &str, environment_id: &str) -> String {
    format!("{project_id}/{environment_id}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn one_fetch_serves_every_reader_until_invalidated() {
        let listings = Arc::new(Listings::<Vec<u32>>::new(Duration::from_secs(60)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let read = |listings: Arc<Listings<Vec<u32>>>, fetches: Arc<AtomicUsize>| async move {
            listings
                .get("p/e", || async {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, ()>(vec![1, 2])
                })
                .await
        };
        let readers: Vec<_> = (0..10)
            .map(|_| tokio::spawn(read(Arc::clone(&listings), Arc::clone(&fetches))))
            .collect();
        for reader in readers {
            assert_eq!(
                reader.await.ok().and_then(|r| r.ok()).as_deref(),
                Some(&vec![1, 2])
            );
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "ten readers, one fetch");
        listings.invalidate("p/e");
        let _ = read(Arc::clone(&listings), Arc::clone(&fetches)).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "fetched again after invalidation"
        );
        // A failed fetch keeps nothing.
        listings.invalidate("p/e");
        let failed: Result<_, &str> = listings.get("p/e", || async { Err("down") }).await;
        assert!(failed.is_err());
        let _ = read(Arc::clone(&listings), Arc::clone(&fetches)).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_fetch_older_than_an_invalidation_is_not_kept() {
        let listings = Arc::new(Listings::<u32>::new(Duration::from_secs(60)));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let listings = Arc::clone(&listings);
            tokio::spawn(async move {
                listings
                    .get("k", || async move {
                        let _ = started_tx.send(());
                        let _ = finish_rx.await;
                        Ok::<_, ()>(1)
                    })
                    .await
            })
        };
        let _ = started_rx.await;
        listings.invalidate("k");
        let _ = finish_tx.send(());
        assert_eq!(slow.await.ok().and_then(|r| r.ok()).as_deref(), Some(&1));
        let next = listings.get("k", || async { Ok::<_, ()>(2) }).await;
        assert_eq!(
            next.ok().as_deref(),
            Some(&2),
            "the old answer was not kept"
        );
    }

    #[tokio::test]
    async fn a_listing_expires() {
        let listings = Listings::<u32>::new(Duration::from_millis(10));
        let first = listings.get("k", || async { Ok::<_, ()>(1) }).await;
        assert_eq!(first.ok().as_deref(), Some(&1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = listings.get("k", || async { Ok::<_, ()>(2) }).await;
        assert_eq!(second.ok().as_deref(), Some(&2));
    }
}
