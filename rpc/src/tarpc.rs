//! tarpc services over shmring: [`connect`] and [`listen`] mirror
//! `tarpc::serde_transport::unix::{connect, listen}`, so moving a tarpc
//! service onto shared memory changes the line that connects and the line
//! that listens, nothing else (the `tarpc` feature of this crate).
//!
//! ```ignore
//! // tarpc over a UNIX socket:
//! let transport = tarpc::serde_transport::unix::connect(path, Bincode::default).await?;
//! // the same service over shmring (shared memory, else the socket; or tcp:HOST:PORT):
//! let transport = shmring_rpc::tarpc::connect(&addr, Bincode::default).await?;
//! let client = WorldClient::new(client::Config::default(), transport).spawn();
//! ```
//!
//! A transport is tarpc's own `serde_transport::Transport` over a
//! [`ShmStream`]: messages are serialized by the codec the caller picks (any
//! `tokio_serde` format: tarpc's examples use bincode or JSON), framed by
//! tokio-util's length-delimited codec (a 4-byte big-endian length, then the
//! message), and the frames go through the rings (or the socket). Every
//! tarpc behaviour carries over unchanged: deadlines, cancellation, many
//! requests in flight, `BaseChannel`, `max_concurrent_requests`. A peer that
//! dies ends the stream with an error at once (its socket's end wakes the
//! reader), so pending calls fail promptly, not at their deadline.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_serde::{Deserializer, Serializer};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub use ::tarpc::serde_transport::Transport;

use crate::addr::Addr;
use crate::error::Result;
use crate::options::{ClientOptions, ServerOptions};
use crate::stream::{ShmListener, ShmStream};

/// Connect to a tarpc server listening with [`listen`] at `addr`, with
/// default options; messages are serialized by `codec_fn()`.
///
/// # Errors
/// As [`ShmStream::connect`].
pub async fn connect<Item, SinkItem, Codec, CodecFn>(
    addr: &Addr,
    codec_fn: CodecFn,
) -> Result<Transport<ShmStream, Item, SinkItem, Codec>>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    connect_with(addr, &ClientOptions::new(), codec_fn).await
}

/// [`connect`] with options (transport, wait policy, ...).
///
/// # Errors
/// As [`ShmStream::connect`].
pub async fn connect_with<Item, SinkItem, Codec, CodecFn>(
    addr: &Addr,
    opts: &ClientOptions,
    codec_fn: CodecFn,
) -> Result<Transport<ShmStream, Item, SinkItem, Codec>>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    let stream = ShmStream::connect(addr, opts).await?;
    Ok(::tarpc::serde_transport::new(Framed::new(stream, LengthDelimitedCodec::new()), codec_fn()))
}

/// Listen at `addr` for tarpc clients that [`connect`], with default
/// options: a stream of server-side transports, one per client (a client
/// whose handshake fails is logged and skipped). Must be called inside a
/// tokio runtime.
///
/// # Errors
/// As [`ShmListener::bind`].
pub async fn listen<Item, SinkItem, Codec, CodecFn>(
    addr: &Addr,
    codec_fn: CodecFn,
) -> Result<Incoming<Item, SinkItem, Codec, CodecFn>>
where
    Item: for<'de> Deserialize<'de>,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    listen_with(addr, &ServerOptions::new(), codec_fn).await
}

/// [`listen`] with options (socket mode, access policy, ring size, ...).
///
/// # Errors
/// As [`ShmListener::bind`].
pub async fn listen_with<Item, SinkItem, Codec, CodecFn>(
    addr: &Addr,
    opts: &ServerOptions,
    codec_fn: CodecFn,
) -> Result<Incoming<Item, SinkItem, Codec, CodecFn>>
where
    Item: for<'de> Deserialize<'de>,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    Ok(Incoming { listener: ShmListener::bind(addr, opts)?, codec_fn, done: false, ghost: PhantomData })
}

/// The server-side transports of [`listen`]: a `Stream` of
/// `io::Result<Transport>`, as tarpc's own `Incoming`. It ends after the
/// error of a listener that failed for good.
pub struct Incoming<Item, SinkItem, Codec, CodecFn> {
    listener: ShmListener,
    codec_fn: CodecFn,
    /// Accepting failed for good (its error was yielded once): the stream
    /// has ended.
    done: bool,
    ghost: PhantomData<Carries<Item, SinkItem, Codec>>,
}

/// What an [`Incoming`]'s transports read, write and encode with (it holds
/// none of them).
type Carries<Item, SinkItem, Codec> = (fn() -> Item, fn(SinkItem), fn() -> Codec);

// No field is ever pinned (the listener is `Unpin`, the codec maker is only
// called), so the stream may move whatever its parameters.
impl<Item, SinkItem, Codec, CodecFn> Unpin for Incoming<Item, SinkItem, Codec, CodecFn> {}

impl<Item, SinkItem, Codec, CodecFn> Incoming<Item, SinkItem, Codec, CodecFn> {
    /// The address listened on (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        self.listener.local_addr()
    }
}

impl<Item, SinkItem, Codec, CodecFn> Stream for Incoming<Item, SinkItem, Codec, CodecFn>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    type Item = io::Result<Transport<ShmStream, Item, SinkItem, Codec>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = Pin::into_inner(self);
        if this.done {
            return Poll::Ready(None);
        }
        match this.listener.poll_accept(cx) {
            Poll::Ready(Ok(stream)) => {
                let framed = Framed::new(stream, LengthDelimitedCodec::new());
                Poll::Ready(Some(Ok(::tarpc::serde_transport::new(framed, (this.codec_fn)()))))
            }
            // Only accepting itself fails here (a client whose handshake
            // fails is skipped): the error once, then the end.
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
