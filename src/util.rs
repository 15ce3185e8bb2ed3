//! Small helpers every layer uses: the boxed future of the I/O traits, a cancellable sleep, and
//! a lock that survives a panicked holder.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A boxed future, so the I/O traits can be used as trait objects.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Sleeps `d` unless cancelled first; false when cancelled.
pub async fn sleep_or_cancel(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Locks `m`; a holder that panicked leaves plain data behind (counters, caches), which is
/// still good to read.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
