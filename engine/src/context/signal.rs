//! A one-core wake-up signal with hand-off: `notify_one` wakes exactly one
//! waiter (the longest waiting) and hands it the notification, `notify`
//! wakes them all; with nobody waiting, the next `wait` resolves at once.
//!
//! Why hand-off: a destination's idle connections all wait on one signal
//! for new jobs. Waking every one of them for each job made all but one
//! find the queue empty — they closed their connections (churn) and cost a
//! wake-up each. A waiter that is dropped after being handed a
//! notification (its timer won the race) passes it on, so no job is left
//! waiting while a connection idles.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    /// Notified with nobody waiting: the next wait resolves at once.
    pending: bool,
    next_id: u64,
    /// Waiting, oldest first.
    waiters: VecDeque<(u64, Waker)>,
    /// Woken by a notification they have not seen yet.
    granted: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Signal(Rc<RefCell<Inner>>);

impl Signal {
    /// Wake every waiter.
    pub fn notify(&self) {
        let wakers: Vec<Waker> = {
            let mut i = self.0.borrow_mut();
            i.pending = true;
            let woken: Vec<(u64, Waker)> = i.waiters.drain(..).collect();
            i.granted.extend(woken.iter().map(|(id, _)| *id));
            woken.into_iter().map(|(_, w)| w).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Wake the longest-waiting waiter, or let the next wait pass.
    pub fn notify_one(&self) {
        let waker = {
            let mut i = self.0.borrow_mut();
            match i.waiters.pop_front() {
                Some((id, w)) => {
                    i.granted.push(id);
                    Some(w)
                }
                None => {
                    i.pending = true;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait {
        Wait {
            signal: self.clone(),
            id: None,
        }
    }
}

pub struct Wait {
    signal: Signal,
    /// Set once registered as a waiter.
    id: Option<u64>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut i = this.signal.0.borrow_mut();
        if let Some(id) = this.id {
            if let Some(pos) = i.granted.iter().position(|g| *g == id) {
                i.granted.swap_remove(pos);
                this.id = None;
                return Poll::Ready(());
            }
            if let Some((_, w)) = i.waiters.iter_mut().find(|(w_id, _)| *w_id == id) {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
                return Poll::Pending;
            }
        }
        if i.pending {
            i.pending = false;
            return Poll::Ready(());
        }
        let id = i.next_id;
        i.next_id += 1;
        i.waiters.push_back((id, cx.waker().clone()));
        this.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let handed_on = {
            let mut i = self.signal.0.borrow_mut();
            i.waiters.retain(|(w_id, _)| *w_id != id);
            match i.granted.iter().position(|g| *g == id) {
                Some(pos) => {
                    i.granted.swap_remove(pos);
                    true
                }
                None => false,
            }
        };
        if handed_on {
            // Woken but gone before it looked: somebody else should look.
            self.signal.notify_one();
        }
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
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    fn poll(w: &mut Wait, waker: &Waker) -> Poll<()> {
        Pin::new(w).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn notify_one_wakes_only_the_oldest_waiter() {
        let s = Signal::default();
        let (ca, wa) = waker();
        let (cb, wb) = waker();
        let (mut a, mut b) = (s.wait(), s.wait());
        assert!(poll(&mut a, &wa).is_pending());
        assert!(poll(&mut b, &wb).is_pending());
        s.notify_one();
        assert_eq!(ca.0.load(Ordering::SeqCst), 1);
        assert_eq!(cb.0.load(Ordering::SeqCst), 0);
        assert!(poll(&mut a, &wa).is_ready());
        assert!(poll(&mut b, &wb).is_pending());
    }

    #[test]
    fn a_notification_with_nobody_waiting_is_kept_for_the_next_wait() {
        let s = Signal::default();
        s.notify_one();
        let (_, w) = waker();
        assert!(poll(&mut s.wait(), &w).is_ready());
        assert!(poll(&mut s.wait(), &w).is_pending());
    }

    #[test]
    fn a_dropped_waiter_hands_its_notification_on() {
        let s = Signal::default();
        let (_, wa) = waker();
        let (cb, wb) = waker();
        let mut a = s.wait();
        let mut b = s.wait();
        assert!(poll(&mut a, &wa).is_pending());
        assert!(poll(&mut b, &wb).is_pending());
        s.notify_one(); // granted to a
        drop(a); // ... which never looks
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut b, &wb).is_ready());
    }

    #[test]
    fn notify_wakes_everyone() {
        let s = Signal::default();
        let (_, w) = waker();
        let mut waits: Vec<Wait> = (0..3).map(|_| s.wait()).collect();
        for x in &mut waits {
            assert!(poll(x, &w).is_pending());
        }
        s.notify();
        for x in &mut waits {
            assert!(poll(x, &w).is_ready());
        }
    }
}
