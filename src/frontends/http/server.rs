//! The two HTTP listeners as [`FrontDoor`]s: the public one (`server.host:server.port`, every
//! route, the admin ones too when no admin port is set) and the admin one
//! (`server.admin_port`: `/admin/reload` and `/shadow`, one worker).

use std::net::TcpListener;

use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpServer};

use super::ApiState;
use crate::frontends::{BindError, Drained, FrontDoor};
use crate::infra::config::Config;

/// An HTTP listener, bound and serving.
pub struct HttpDoor {
    name: &'static str,
    handle: ServerHandle,
    running: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    /// Whether requests in flight are answered before it stops (the admin door's reloads are
    /// not worth waiting for).
    graceful: bool,
    /// Where it listens, as bound (`server.port: 0` picks a free port).
    pub address: String,
    pub workers: usize,
}

impl HttpDoor {
    /// Binds `server.host:server.port` and serves the public routes.
    pub fn public(config: &Config, state: web::Data<ApiState>) -> Result<HttpDoor, BindError> {
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let (listener, address) = bind(&addr)?;
        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (limits, demo_page) = (config.limits.clone(), config.server.demo_page);
        let with_admin = config.server.admin_port.is_none();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::from_fn(super::observe))
                .configure(|cfg| super::routes(cfg, &limits, demo_page, with_admin))
                .default_service(web::to(super::not_found))
        })
        .on_connect(super::connection::remember_socket)
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(config.server.drain_timeout.ceil() as u64)
        .listen(listener)
        .map_err(|source| bind_error(&addr, source))?
        .run();
        Ok(HttpDoor::serving("http", server, address, workers, true))
    }

    /// Binds the admin port on `server.admin_host` (127.0.0.1 unless set).
    pub fn admin(
        config: &Config,
        port: u16,
        state: web::Data<ApiState>,
    ) -> Result<HttpDoor, BindError> {
        let host = config.server.admin_host.as_deref().unwrap_or("127.0.0.1");
        let addr = format!("{host}:{port}");
        let (listener, address) = bind(&addr)?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(super::admin_routes)
                .default_service(web::to(super::not_found))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .map_err(|source| bind_error(&addr, source))?
        .run();
        let door = HttpDoor::serving("admin", server, address, 1, false);
        // Tests and scripts read this line to learn the port when `server.admin_port` is 0.
        println!("newscls admin listening on http://{}", door.address);
        Ok(door)
    }

    /// The door of a server that is bound: its task is spawned here, and its handle kept to stop
    /// it.
    fn serving(
        name: &'static str,
        server: actix_web::dev::Server,
        address: String,
        workers: usize,
        graceful: bool,
    ) -> HttpDoor {
        HttpDoor {
            name,
            handle: server.handle(),
            running: actix_web::rt::spawn(server),
            graceful,
            address,
            workers,
        }
    }
}

/// The listener and the address it is bound to (`:0` picks a free port).
fn bind(addr: &str) -> Result<(TcpListener, String), BindError> {
    let listener = TcpListener::bind(addr).map_err(|source| bind_error(addr, source))?;
    let address = listener
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    Ok((listener, address))
}

fn bind_error(addr: &str, source: std::io::Error) -> BindError {
    BindError {
        addr: addr.to_string(),
        source,
    }
}

impl FrontDoor for HttpDoor {
    fn name(&self) -> &'static str {
        self.name
    }

    fn stop_accepting(self: Box<Self>) -> Drained {
        // Sends the stop command now; the future only waits for it to complete (the public
        // door's own limit is `server.drain_timeout`, its shutdown timeout).
        let stopped = self.handle.stop(self.graceful);
        let (name, running) = (self.name, self.running);
        Box::pin(async move {
            stopped.await;
            match running.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(door = name, %error, "the listener failed"),
                Err(error) => tracing::error!(door = name, %error, "the listener's task failed"),
            }
        })
    }
}
