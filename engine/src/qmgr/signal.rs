//! A one-core wake-up signal: `notify` marks it and wakes the waiter;
//! `wait` resolves at once if it was notified since the last wait.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    pending: bool,
    wakers: Vec<Waker>,
}

#[derive(Debug, Clone, Default)]
pub struct Signal(Rc<RefCell<Inner>>);

impl Signal {
    pub fn notify(&self) {
        let wakers = {
            let mut i = self.0.borrow_mut();
            i.pending = true;
            std::mem::take(&mut i.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait {
        Wait(self.clone())
    }
}

pub struct Wait(Signal);

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut i = (self.0).0.borrow_mut();
        if i.pending {
            i.pending = false;
            return Poll::Ready(());
        }
        if !i.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            i.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
