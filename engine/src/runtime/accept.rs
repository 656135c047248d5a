//! One core's listeners: accepting connections within each service's
//! process limit, and opening and closing listeners when a reload changes
//! the set of addresses.

use super::CoreContext;
use super::listen::{Bound, Planned};
use super::services::{Service, Services, Slot};
use crate::context::Shutdown;
use crate::smtpd::connection::Connection;
use crate::smtpd::session::Session;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// How often a full service looks for a free slot (slots free on any core,
/// so there is no local wake-up to wait for).
const SLOT_POLL: Duration = Duration::from_millis(10);

/// A running accept loop.
struct Running {
    address: SocketAddr,
    stop: Shutdown,
    task: glommio::Task<()>,
}

/// Which service (master.cf id) each address serves now: a reload may
/// give an address that stays open to a renamed service.
type Routes = Rc<RefCell<HashMap<SocketAddr, String>>>;

/// The accept loops of one core.
pub struct CoreListeners {
    ctx: Rc<CoreContext>,
    services: Rc<RefCell<Services>>,
    routes: Routes,
    running: Vec<Running>,
}

impl CoreListeners {
    pub fn new(ctx: Rc<CoreContext>, services: Rc<RefCell<Services>>) -> CoreListeners {
        CoreListeners {
            ctx,
            services,
            routes: Rc::default(),
            running: Vec::new(),
        }
    }

    /// Start accepting on `bound`.
    pub fn start(&mut self, bound: Bound) {
        let stop = Shutdown::default();
        let address = bound.planned.address;
        self.routes
            .borrow_mut()
            .insert(address, bound.planned.service.clone());
        let task = glommio::spawn_local(accept_loop(
            bound,
            Rc::clone(&self.ctx),
            Rc::clone(&self.services),
            Rc::clone(&self.routes),
            stop.clone(),
        ));
        self.running.push(Running {
            address,
            stop,
            task,
        });
    }

    /// Stop the listeners `plan` no more has; their sockets are closed when
    /// this returns (sessions they started go on).
    pub async fn retain(&mut self, plan: &[Planned]) {
        *self.routes.borrow_mut() = plan
            .iter()
            .map(|p| (p.address, p.service.clone()))
            .collect();
        let (keep, close): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| plan.iter().any(|p| p.address == r.address));
        self.running = keep;
        for r in close {
            r.stop.trigger();
            r.task.await;
        }
    }

    /// Wait for every accept loop to end (after the core's shutdown).
    pub async fn join(self) {
        for r in self.running {
            r.task.await;
        }
    }
}

/// Resolves when the core stops or this listener is closed.
async fn stopped(ctx: &CoreContext, stop: &Shutdown) {
    futures_lite::future::or(ctx.shutdown.wait(), stop.wait()).await
}

/// Sleep `d` unless stopped first; false when stopped.
async fn pause(d: Duration, ctx: &CoreContext, stop: &Shutdown) -> bool {
    futures_lite::future::or(
        async {
            glommio::timer::sleep(d).await;
            true
        },
        async {
            stopped(ctx, stop).await;
            false
        },
    )
    .await
}

/// A slot of `service`, waiting while the service is full; None when the
/// core or listener stops first. The flag says the service was full.
async fn take_slot(service: &Service, ctx: &CoreContext, stop: &Shutdown) -> Option<Slot> {
    loop {
        if let Some((slot, full)) = service.slots.try_take() {
            if full {
                for w in service.slots.warnings() {
                    ctx.log.line(&master_program(&service.settings.program), &w);
                }
            }
            return Some(slot);
        }
        if !pause(SLOT_POLL, ctx, stop).await {
            return None;
        }
    }
}

/// `postfix/smtpd` -> `postfix/master`: the process limit is the master's.
fn master_program(smtpd: &str) -> String {
    let name = smtpd.strip_suffix("/smtpd").unwrap_or(smtpd);
    let name = name.split('/').next().unwrap_or(name);
    format!("{name}/master")
}

async fn accept_loop(
    bound: Bound,
    ctx: Rc<CoreContext>,
    services: Rc<RefCell<Services>>,
    routes: Routes,
    stop: Shutdown,
) {
    let address = bound.planned.address;
    let listener = bound.into_acceptor();
    let current = || {
        routes
            .borrow()
            .get(&address)
            .and_then(|id| services.borrow().get(id).cloned())
    };
    loop {
        let Some(service) = current() else {
            return;
        };
        // Postfix's process limit: while the service is full, clients wait
        // in the listen queue, connected but not greeted.
        if !service.slots.available() {
            if !pause(SLOT_POLL, &ctx, &stop).await {
                return;
            }
            continue;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopped(&ctx, &stop).await;
            None
        })
        .await;
        let accepted = match accepted {
            None => return,
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                ctx.log
                    .line("corepost/smtpd", &format!("warning: accept: {e}"));
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A reload while waiting: the client gets the new settings.
        let Some(service) = current() else {
            return;
        };
        // Another core may have taken the last slot meanwhile: this client
        // waits, not greeted, like the rest of the listen queue.
        let Some(slot) = take_slot(&service, &ctx, &stop).await else {
            return;
        };
        let super::acceptor::Accepted {
            stream,
            peer,
            local,
        } = accepted;
        let stress = service.slots.under_stress();
        let settings = if stress {
            service.stressed
        } else {
            service.settings
        };
        let core = Rc::clone(&ctx);
        ctx.sessions.set(ctx.sessions.get() + 1);
        crate::metrics::session_started();
        glommio::spawn_local(async move {
            let mut stream = stream;
            let (mut peer, mut local, mut failure) = (peer, local, None);
            if let Some(proxy) = &settings.upstream_proxy {
                match crate::smtpd::haproxy::receive(&mut stream, proxy).await {
                    Ok(Some(e)) => (peer, local) = (e.client, Some(e.server)),
                    Ok(None) => {}
                    Err(w) => failure = Some(w),
                }
            }
            Session::new(
                Connection::new(stream),
                Rc::clone(&core),
                settings,
                peer,
                local,
            )
            .under_stress(stress)
            .proxy_failed(failure)
            .run()
            .await;
            drop(slot);
            core.sessions.set(core.sessions.get() - 1);
            crate::metrics::session_ended();
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_master_logs_the_process_limit() {
        assert_eq!(super::master_program("postfix/smtpd"), "postfix/master");
        assert_eq!(
            super::master_program("corepost/submission/smtpd"),
            "corepost/master"
        );
    }
}
