//! A per-core "stop now" signal that any number of tasks can wait on.
//!
//! Sessions wait on it beside every read, so a wait is registered and dropped once per SMTP
//! command: a dropped [`Wait`] takes its waker out again (O(1)), or the list would grow by one
//! waker per session ever served — every later wait scanning it, and each waker keeping its
//! finished task's allocation alive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    triggered: bool,
    next_id: u64,
    /// The waiting futures' wakers, by the id their [`Wait`] holds.
    wakers: HashMap<u64, Waker>,
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
        for w in wakers.into_values() {
            w.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.borrow().triggered
    }

    /// Resolves once [`Shutdown::trigger`] was called.
    pub fn wait(&self) -> Wait {
        Wait {
            shutdown: self.clone(),
            id: None,
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.0.borrow().wakers.len()
    }
}

/// The future returned by [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait {
    shutdown: Shutdown,
    /// Set once registered.
    id: Option<u64>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut inner = this.shutdown.0.borrow_mut();
        if inner.triggered {
            return Poll::Ready(());
        }
        match this.id {
            Some(id) => {
                if let Some(w) = inner.wakers.get_mut(&id)
                    && !w.will_wake(cx.waker())
                {
                    *w = cx.waker().clone();
                }
            }
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                inner.wakers.insert(id, cx.waker().clone());
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shutdown.0.borrow_mut().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_wait_leaves_nothing_behind_and_a_trigger_wakes_the_rest() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let shutdown = Shutdown::default();
                // As sessions do per command: race a wait against the command's read, in
                // many tasks (sessions) one after the other.
                for _ in 0..100 {
                    let s = shutdown.clone();
                    let session = glommio::spawn_local(async move {
                        for _ in 0..10 {
                            let raced = futures_lite::future::or(
                                async {
                                    s.wait().await;
                                    false
                                },
                                async {
                                    futures_lite::future::yield_now().await;
                                    true
                                },
                            );
                            assert!(raced.await);
                        }
                    });
                    session.await;
                }
                assert_eq!(shutdown.waiting(), 0);
                let waiting = glommio::spawn_local({
                    let s = shutdown.clone();
                    async move { s.wait().await }
                });
                futures_lite::future::yield_now().await;
                assert_eq!(shutdown.waiting(), 1);
                shutdown.trigger();
                waiting.await;
                assert!(shutdown.is_triggered());
                assert_eq!(shutdown.waiting(), 0);
                // After the trigger a wait resolves at once and registers nothing.
                shutdown.wait().await;
                assert_eq!(shutdown.waiting(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
