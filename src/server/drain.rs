//! Graceful shutdown as one worker's HTTP/1 connections see it: a flag, and the wakers of the
//! connections waiting for their next request, woken when the flag goes up so they close at
//! once. Costs a connection one registration when it starts and a waker check per wait, where
//! a `watch` channel would take a lock on every wait.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    stopping: Cell<bool>,
    idle: RefCell<Vec<Weak<IdleSlot>>>,
}

/// Where one connection leaves its waker while it waits for a request.
#[derive(Default)]
pub struct IdleSlot {
    waker: RefCell<Option<Waker>>,
}

impl Drain {
    /// Shutdown began: every waiting connection is woken (and sees `stopping`).
    pub fn stop(&self) {
        self.stopping.set(true);
        let slots = std::mem::take(&mut *self.idle.borrow_mut());
        for slot in slots.iter().filter_map(Weak::upgrade) {
            if let Some(w) = slot.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// A connection's slot, registered for the life of the connection.
    pub fn slot(&self) -> Rc<IdleSlot> {
        let slot = Rc::new(IdleSlot::default());
        let mut idle = self.idle.borrow_mut();
        // Closed connections leave dead entries: drop them once they could double the list.
        if idle.len() >= 64 && idle.len().is_power_of_two() {
            idle.retain(|w| w.strong_count() > 0);
        }
        idle.push(Rc::downgrade(&slot));
        slot
    }

    /// `Ready` once shutdown began; otherwise the task is woken when it begins.
    pub fn poll_stopped(&self, slot: &IdleSlot, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopping.get() {
            return Poll::Ready(());
        }
        let mut w = slot.waker.borrow_mut();
        match w.as_ref() {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_waiting_connection_is_woken_when_shutdown_begins() {
        let drain = Drain::default();
        let slot = drain.slot();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(drain.poll_stopped(&slot, &mut cx).is_pending());
        drain.stop();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(drain.poll_stopped(&slot, &mut cx).is_ready());
    }

    #[test]
    fn closed_connections_do_not_pile_up() {
        let drain = Drain::default();
        for _ in 0..1000 {
            drop(drain.slot());
        }
        assert!(drain.idle.borrow().len() < 130);
    }
}
