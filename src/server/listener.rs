//! Listening sockets: one `SO_REUSEPORT` socket per address per worker, so the kernel spreads new
//! connections across workers and no accept lock exists.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener on `addr` that other sockets may share with `SO_REUSEPORT`.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` must not also take the IPv4 port: nginx binds v4 and v6 separately.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Fails if another process (not one of our own reuseport sockets) holds `addr`: binding a
/// plain socket first turns "port in use" into a clear start-up error instead of silently
/// sharing a port with an unrelated `SO_REUSEPORT` user.
pub fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}
