//! The listener the emulator serves on: every accepted TCP stream carries a
//! kill switch that a request handler can pull to abort the whole connection
//! (reset, no response), which is how the "drop" faults are made.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Aborts one connection: once pulled, every read and write on it fails, and
/// the socket is closed with a reset.
#[derive(Debug, Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl KillSwitch {
    pub fn pull(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    fn is_pulled(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// The peer of a request, as `ConnectInfo<PeerInfo>`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    kill: Option<Arc<KillSwitch>>,
}

impl PeerInfo {
    /// A peer without a kill switch (for `MockConnectInfo` in tests that use the router directly).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, kill: None }
    }

    /// Pulls the connection's kill switch; returns whether there was one.
    pub fn kill(&self) -> bool {
        match &self.kill {
            Some(k) => {
                k.pull();
                true
            }
            None => false,
        }
    }
}

impl Connected<IncomingStream<'_, EmulatorListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, EmulatorListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            kill: Some(stream.io().kill.clone()),
        }
    }
}

/// A TCP listener whose streams carry a [`KillSwitch`].
#[derive(Debug)]
pub struct EmulatorListener {
    inner: TcpListener,
}

impl EmulatorListener {
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for EmulatorListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        KillableStream {
                            inner: stream,
                            kill: Arc::default(),
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails every operation once its kill switch is pulled.
#[derive(Debug)]
pub struct KillableStream {
    inner: TcpStream,
    kill: Arc<KillSwitch>,
}

impl KillableStream {
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        self.kill.waker.register(cx.waker());
        if self.kill.is_pulled() {
            let _ = self.inner.set_zero_linger();
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection dropped by fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        if self.kill.is_pulled() {
            // Close with RST, not FIN: the client sees a reset connection.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
