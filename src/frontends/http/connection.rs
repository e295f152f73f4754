//! Noticing that a client has gone away while its request waits.
//!
//! actix-web does not cancel a handler when the peer closes its connection (actix-web issue
//! #3462), so a request waiting in the queue would still be computed for nobody. At connect time
//! we keep a duplicate of the socket's descriptor; a waiting handler peeks at it now and then,
//! and a zero-byte read means the peer closed. The handler then returns, its reply channels
//! drop, and the queue skips its texts before inference.

use std::any::Any;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use actix_web::dev::Extensions;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub struct ClientSocket(TcpStream);

/// `HttpServer::on_connect` hook: remembers the connection's socket.
pub fn remember_socket(connection: &dyn Any, extensions: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
            extensions.insert(ClientSocket(TcpStream::from(fd)));
        }
    }
}

impl ClientSocket {
    /// True once the peer has closed the connection. The socket is non-blocking (the flag is
    /// shared with actix's descriptor), so this never waits; pipelined bytes mean "still here".
    pub fn is_closed(&self) -> bool {
        matches!(self.0.peek(&mut [0u8; 1]), Ok(0))
    }
}

/// Completes when the client disconnects; never, when the socket is unknown.
pub async fn disconnected(socket: Option<&ClientSocket>) {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        if socket.is_closed() {
            return;
        }
    }
}
