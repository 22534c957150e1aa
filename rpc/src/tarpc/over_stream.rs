//! tarpc's own `serde_transport` over a [`ShmStream`]: the second way
//! into shared memory (any `tokio_serde` format, framed by tokio-util's
//! length-delimited codec: a 4-byte big-endian length, then the message).

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_serde::{Deserializer, Serializer};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use ::tarpc::serde_transport::Transport;

use crate::addr::Addr;
use crate::error::Result;
use crate::options::{ClientOptions, ServerOptions};
use crate::stream::{ShmListener, ShmStream};

/// Connect to a tarpc server listening with [`listen_over_stream`] at
/// `addr`: tarpc's `serde_transport` over a [`ShmStream`], messages
/// serialized by `codec_fn()` (any `tokio_serde` format).
///
/// # Errors
/// As [`ShmStream::connect`].
pub async fn connect_over_stream<Item, SinkItem, Codec, CodecFn>(
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

/// Listen at `addr` for tarpc clients that [`connect_over_stream`]: a
/// stream of server-side transports, one per client (a client whose
/// handshake fails is logged and skipped). Must be called inside a tokio
/// runtime.
///
/// # Errors
/// As [`ShmListener::bind`].
pub async fn listen_over_stream<Item, SinkItem, Codec, CodecFn>(
    addr: &Addr,
    opts: &ServerOptions,
    codec_fn: CodecFn,
) -> Result<IncomingOverStream<Item, SinkItem, Codec, CodecFn>>
where
    Item: for<'de> Deserialize<'de>,
    Codec: Serializer<SinkItem> + Deserializer<Item>,
    CodecFn: Fn() -> Codec,
{
    Ok(IncomingOverStream { listener: ShmListener::bind(addr, opts)?, codec_fn, done: false, ghost: PhantomData })
}

/// The server-side transports of [`listen_over_stream`]: a `Stream` of
/// `io::Result<Transport>`, as tarpc's own `Incoming`. It ends after the
/// error of a listener that failed for good.
pub struct IncomingOverStream<Item, SinkItem, Codec, CodecFn> {
    listener: ShmListener,
    codec_fn: CodecFn,
    /// Accepting failed for good (its error was yielded once): the stream
    /// has ended.
    done: bool,
    ghost: PhantomData<Carries<Item, SinkItem, Codec>>,
}

impl<Item, SinkItem, Codec, CodecFn> std::fmt::Debug for IncomingOverStream<Item, SinkItem, Codec, CodecFn> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingOverStream")
            .field("listener", &self.listener)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// What an [`IncomingOverStream`]'s transports read, write and encode with (it holds
/// none of them).
type Carries<Item, SinkItem, Codec> = (fn() -> Item, fn(SinkItem), fn() -> Codec);

// No field is ever pinned (the listener is `Unpin`, the codec maker is only
// called), so the stream may move whatever its parameters.
impl<Item, SinkItem, Codec, CodecFn> Unpin for IncomingOverStream<Item, SinkItem, Codec, CodecFn> {}

impl<Item, SinkItem, Codec, CodecFn> IncomingOverStream<Item, SinkItem, Codec, CodecFn> {
    /// The address listened on (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        self.listener.local_addr()
    }
}

impl<Item, SinkItem, Codec, CodecFn> Stream for IncomingOverStream<Item, SinkItem, Codec, CodecFn>
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
