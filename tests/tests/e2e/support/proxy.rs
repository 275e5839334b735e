//! A TCP proxy to PostgreSQL whose connections can fall silent (a peer lost without closing
//! its connections: a failover, a firewall that forgot them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `host:port` of a PostgreSQL URL.
pub fn address_of(url: &str) -> String {
    url.split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the database URL")
        .to_owned()
}

/// One proxied connection: what its client has sent (`LISTEN`, an advisory lock), and
/// whether it is silenced.
#[derive(Clone, Default)]
struct Proxied {
    listens: Arc<AtomicBool>,
    locks: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
}

/// A TCP proxy to PostgreSQL that can fall silent for some connections, as a connection does
/// whose peer vanished: open, but nothing gets through either way. Connections made later go
/// on.
pub struct Proxy {
    pub port: u16,
    connections: Arc<Mutex<Vec<Proxied>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Proxied>>> = Arc::default();
        let registry = connections.clone();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let proxied = Proxied::default();
                registry.lock().unwrap().push(proxied.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, proxied.clone(), true));
                tokio::spawn(pump(server_read, client_write, proxied, false));
            }
        });
        Self {
            port,
            connections,
            task,
        }
    }

    /// Silences the connections open so far that `which` picks; how many.
    fn silence(&self, which: impl Fn(&Proxied) -> bool) -> usize {
        let mut silenced = 0;
        for proxied in self.connections.lock().unwrap().iter().filter(|p| which(p)) {
            proxied.silent.store(true, Ordering::SeqCst);
            silenced += 1;
        }
        silenced
    }

    /// Silences every connection that has sent `LISTEN` so far; how many.
    pub fn silence_listeners(&self) -> usize {
        self.silence(|p| p.listens.load(Ordering::SeqCst))
    }

    /// Silences every connection open so far but those that took an advisory lock (whose
    /// session, kept alive by the proxy, would hold the lock for good); how many.
    pub fn silence_all_but_lock_holders(&self) -> usize {
        self.silence(|p| !p.locks.load(Ordering::SeqCst))
    }

    /// Connections that have sent `LISTEN` and are not silenced.
    pub fn live_listeners(&self) -> usize {
        let connections = self.connections.lock().unwrap();
        connections
            .iter()
            .filter(|p| p.listens.load(Ordering::SeqCst) && !p.silent.load(Ordering::SeqCst))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction of a proxied connection, holding what it reads while the connection
/// is silenced; from the client, notes a `LISTEN` or an advisory lock.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    proxied: Proxied,
    from_client: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if from_client {
            let sent = &buffer[..n];
            if sent.windows(6).any(|w| w == b"LISTEN") {
                proxied.listens.store(true, Ordering::SeqCst);
            }
            if sent.windows(14).any(|w| w == b"advisory_lock(") {
                proxied.locks.store(true, Ordering::SeqCst);
            }
        }
        while proxied.silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
