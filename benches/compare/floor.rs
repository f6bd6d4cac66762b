//! The "floor" peer: a do-nothing TCP forwarder (tokio `copy_bidirectional`, one task per
//! connection on a multi-thread runtime like the gateway's), measured in the same run.
//!
//! On a machine where pgbench, PostgreSQL and the hop share the same cores, any userspace
//! hop costs CPU the server would otherwise use; this peer shows what the cheapest possible
//! hop costs here, so the gateway's ratios can be read against it. Used in front of
//! PostgreSQL (pg.rs) and of sshd (ssh.rs).

use std::net::SocketAddr;

use anyhow::Context;

/// A running forwarder; it stops when dropped (its runtime is shut down).
pub struct Floor {
    pub port: u16,
    _rt: tokio::runtime::Runtime,
}

impl Floor {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Floor> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("floor")
            .build()?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the floor forwarder")?;
        let port = listener.local_addr()?.port();
        rt.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                });
            }
        });
        Ok(Floor { port, _rt: rt })
    }

    /// CPU time and context switches of the forwarder's threads (this process's threads
    /// named `floor`) so far.
    pub fn usage() -> Option<crate::hop::Usage> {
        crate::hop::of_threads(std::process::id(), |name| name == "floor")
    }
}
