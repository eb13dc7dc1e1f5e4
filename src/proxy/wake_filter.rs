//! Futures polled only when one of them woke.
//!
//! A client connection's task waits on hyper's connection and on a few
//! events that come once per connection at most (abort, its own cut, the
//! drain, the idle timer). A `select!` over all of them polls every one at
//! every wake of the task, several times per request. [`WakeFilter`] gives
//! the rare ones a waker of their own: they are polled again only after
//! one of them called it. This is what `FuturesUnordered` does for a
//! dynamic set, at the price of an allocation per future; a connection
//! that serves one request and closes would pay more for those than the
//! polls cost (instr_bench `newconn`: +8 % instructions per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// One per connection: one allocation.
pub(super) struct WakeFilter {
    flag: Arc<Flag>,
    waker: Waker,
}

struct Flag {
    /// One of the filtered futures woke since they were last polled.
    woken: AtomicBool,
    /// The task that polls the filter.
    outer: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl WakeFilter {
    pub(super) fn new() -> WakeFilter {
        let flag = Arc::new(Flag {
            // The first poll registers the futures.
            woken: AtomicBool::new(true),
            outer: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        WakeFilter { flag, waker }
    }

    /// Runs `poll` (which polls the filtered futures with the context it is
    /// given) if one of them woke since the last run, or the first time;
    /// otherwise `Pending` at once. The task's waker is registered first,
    /// so a wake between the check and the polls is not lost.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.flag.outer.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let result = poll(&mut Context::from_waker(&self.waker));
        if result.is_ready() {
            // A caller that polls again gets the futures polled again.
            self.flag.woken.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn polls_only_after_a_wake_of_its_own() {
        let filter = WakeFilter::new();
        let polls = AtomicUsize::new(0);
        let notify = Arc::new(tokio::sync::Notify::new());
        let notified = notify.notified();
        tokio::pin!(notified);
        let mut first = true;
        let mut rare = std::pin::pin!(poll_fn(|cx| {
            filter.poll(cx, |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                if first {
                    first = false;
                    // Registered, not ready.
                    assert!(notified.as_mut().poll(cx).is_pending());
                    return Poll::Pending;
                }
                notified.as_mut().poll(cx).map(|_| "event")
            })
        }));
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(rare.as_mut().poll(&mut cx).is_pending());
        // The outer task woken by something else: the futures are not polled.
        for _ in 0..5 {
            assert!(rare.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        assert_eq!(rare.as_mut().poll(&mut cx), Poll::Ready("event"));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
