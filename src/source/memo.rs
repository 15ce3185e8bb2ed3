//! Coalesced reads: answers of one source that several replicas of a fleet ask for at about the
//! same time (its labels, its hash at a height) are fetched once and shared for a short window.
//! Errors are not shared: a caller that finds the read failed makes its own.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Entries kept before old ones are swept.
const SWEEP_ABOVE: usize = 256;

/// One shared read: when it began, and its answer once there.
type Slot<V> = (Instant, Arc<OnceCell<V>>);

/// Answers by key, each shared for `window` after the read that produced it began.
#[derive(Debug)]
pub(crate) struct Memo<K, V> {
    window: Duration,
    map: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Hash + Eq + Copy, V: Clone> Memo<K, V> {
    /// Shares answers for `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self { window, map: Mutex::new(HashMap::new()) }
    }

    /// Forgets every shared answer.
    pub(crate) fn clear(&self) {
        crate::util::lock(&self.map).clear();
    }

    /// The answer for `key`: a read begun less than `window` ago (waited for if still running),
    /// or a new one by `read`.
    pub(crate) async fn get<E, Fut>(&self, key: K, read: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = {
            let now = Instant::now();
            let mut map = crate::util::lock(&self.map);
            if map.len() > SWEEP_ABOVE {
                map.retain(|_, (at, _)| now.duration_since(*at) < self.window);
            }
            match map.get(&key) {
                Some((at, cell)) if now.duration_since(*at) < self.window => cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    map.insert(key, (now, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_try_init(read).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_reads_share_one_answer_within_the_window() {
        let memo = Memo::<u64, u32>::new(Duration::from_millis(500));
        let reads = AtomicU32::new(0);
        let read = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst))
        };
        let (a, b) = tokio::join!(memo.get(1, read), memo.get(1, read));
        assert_eq!((a, b), (Ok(0), Ok(0)));
        assert_eq!(memo.get(2, read).await, Ok(1), "another key is another read");
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(memo.get(1, read).await, Ok(2), "after the window, a new read");
        // A failed read is not shared.
        let failing = memo.get(3, || async { Err::<u32, &str>("down") }).await;
        assert_eq!(failing, Err("down"));
        assert_eq!(memo.get(3, read).await, Ok(3));
    }
}
