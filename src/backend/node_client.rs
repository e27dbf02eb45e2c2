//! A plain request/response client for one node, for the control plane (topology refresh and
//! admin engines). Not for the data path: it sends one command and waits for its reply.

use crate::net::dialer::Dialer;
use crate::net::stream::Stream;
use crate::route::resp::{self, ReplyScanner, Value};
use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use std::time::Duration;

/// A connection to one node. Every call has a deadline.
pub struct NodeClient {
    addr: String,
    stream: Stream,
    buf: BytesMut,
    timeout: Duration,
}

impl NodeClient {
    /// Connects to `addr` (`host:port`) within `timeout` the way `dialer`'s proxy does (its
    /// TLS, then its credentials first); later calls use the same deadline.
    pub async fn connect(
        dialer: &Dialer,
        addr: &str,
        timeout: Duration,
    ) -> anyhow::Result<NodeClient> {
        let stream = Stream::connect(dialer, addr, timeout)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let mut client = NodeClient {
            addr: addr.to_string(),
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            timeout,
        };
        if let Some(auth) = dialer.auth() {
            let reply = tokio::time::timeout(timeout, client.roundtrip_raw(auth))
                .await
                .map_err(|_| anyhow!("AUTH to {addr}: no reply within {timeout:?}"))??;
            if let Value::Error(e) = reply {
                bail!("node {addr} refused the proxy's credentials ({e}); check backend_user / backend_password");
            }
        }
        Ok(client)
    }

    /// The same connection with another deadline for its later calls (a MIGRATE of big keys
    /// may take far longer than an admin command).
    pub fn with_timeout(mut self, timeout: Duration) -> NodeClient {
        self.timeout = timeout;
        self
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and returns its reply (an error reply is `Ok(Value::Error)`).
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Value> {
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .unwrap_or_default();
        tokio::time::timeout(self.timeout, self.roundtrip(args))
            .await
            .map_err(|_| {
                anyhow!(
                    "{name} to {}: no reply within {:?}",
                    self.addr,
                    self.timeout
                )
            })?
            .with_context(|| format!("{name} to {}", self.addr))
    }

    /// Like [`NodeClient::call`], but an error reply becomes `Err`, and the reply must be text.
    pub async fn call_text<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<String> {
        let v = self.call(args).await?;
        v.text().map_err(|e| anyhow!("{} replied: {e}", self.addr))
    }

    /// Sends several commands in one write and returns their replies in order (a pipeline),
    /// all within the client's deadline. Error replies are `Ok(Value::Error)` entries.
    pub async fn call_many<A: AsRef<[u8]>>(
        &mut self,
        commands: &[Vec<A>],
    ) -> anyhow::Result<Vec<Value>> {
        let mut wire = BytesMut::new();
        for c in commands {
            wire.extend_from_slice(&resp::encode_command(c));
        }
        let n = commands.len();
        let addr = self.addr.clone();
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&wire).await?;
            let mut scanner = ReplyScanner::default();
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                if let Some(frame) = scanner.next_frame(&mut self.buf)? {
                    out.push(Value::decode(&frame)?);
                    continue;
                }
                if self.stream.read_some(&mut self.buf).await? == 0 {
                    bail!("connection closed");
                }
            }
            anyhow::Ok(out)
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{n} pipelined commands to {addr}: no reply within {:?}",
                self.timeout
            )
        })?
        .with_context(|| format!("pipeline to {addr}"))
    }

    async fn roundtrip<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Value> {
        self.roundtrip_raw(&resp::encode_command(args)).await
    }

    async fn roundtrip_raw(&mut self, wire: &[u8]) -> anyhow::Result<Value> {
        let frame = self.frame_roundtrip(wire).await?;
        Ok(Value::decode(&frame)?)
    }

    /// Sends a request already in wire form and returns its reply frame as the node sent it,
    /// within the client's deadline.
    pub async fn call_wire(&mut self, wire: &[u8]) -> anyhow::Result<Bytes> {
        tokio::time::timeout(self.timeout, self.frame_roundtrip(wire))
            .await
            .map_err(|_| anyhow!("no reply from {} within {:?}", self.addr, self.timeout))?
    }

    async fn frame_roundtrip(&mut self, wire: &[u8]) -> anyhow::Result<Bytes> {
        self.stream.write_all(wire).await?;
        let mut scanner = ReplyScanner::default();
        loop {
            if let Some(frame) = scanner.next_frame(&mut self.buf)? {
                return Ok(frame);
            }
            if self.stream.read_some(&mut self.buf).await? == 0 {
                bail!("connection closed");
            }
        }
    }
}
