//! A per-core "stop now" signal that any number of tasks can wait on.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    triggered: bool,
    wakers: Vec<Waker>,
}

/// Cloneable handle; all clones see the same trigger.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Rc<RefCell<Inner>>);

impl Shutdown {
    pub fn trigger(&self) {
        let wakers = {
            let mut inner = self.0.borrow_mut();
            inner.triggered = true;
            std::mem::take(&mut inner.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.borrow().triggered
    }

    /// Resolves once [`Shutdown::trigger`] was called.
    pub fn wait(&self) -> Wait {
        Wait(self.clone())
    }
}

/// The future returned by [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait(Shutdown);

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = (self.0).0.borrow_mut();
        if inner.triggered {
            return Poll::Ready(());
        }
        if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            inner.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
