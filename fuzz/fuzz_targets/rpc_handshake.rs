//! Fuzz target `rpc_handshake`: the server's side of a connection, fed
//! arbitrary bytes as a client's handshake, optionally with file
//! descriptors attached.
//!
//! Each input gets a fresh socket pair: its bytes (with zero to three file
//! descriptors by `SCM_RIGHTS`: pipe ends, a memfd) go into one end, whose
//! writing side is then closed, and `Server::serve_stream` serves the other
//! end on a scoped thread while this one reads the answer to its end. Then,
//! if asked, a well-behaved client (`Client::connect_stream`) must still be
//! served the same way: garbage ends only its own connection, and nothing
//! panics. Every thread is joined by hand before the input ends, so the leak
//! check libFuzzer makes after each input sees no thread half-way out.
#![no_main]

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmring_rpc::{Client, ClientOptions, Server, ServerOptions};

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    /// How many descriptors to attach to the first write (0 to 3).
    fds: u8,
    /// Check the server with a real client after this input.
    check: bool,
}

fn descriptors(n: u8) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    for i in 0..n % 4 {
        if i % 2 == 0 {
            let (r, _w) = std::io::pipe().expect("pipe");
            out.push(OwnedFd::from(r));
        } else {
            let seg = shmring::Segment::create_memfd("fuzz-extra", 4096).expect("memfd");
            out.push(seg.fd().try_clone_to_owned().expect("dup"));
        }
    }
    out
}

/// Wait for a scoped thread to exit completely (`pthread_join`).
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) {
    let _ = h.join();
}

fn echo(req: &[u8]) -> Vec<u8> {
    req.to_vec()
}

/// LeakSanitizer suppressions for this binary: glibc allocates the list of
/// a thread's thread-local destructors (`__cxa_thread_atexit_impl`) on the
/// first registration and frees it only when the thread exits, which for
/// the fuzzing thread is never; LeakSanitizer reports that list. It is not
/// a leak of ours.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:__cxa_thread_atexit_impl\n".as_ptr()
}

fuzz_target!(|input: Input| {
    let opts = ServerOptions::new().ring_capacity(4096);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
    let fds = descriptors(input.fds);
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            // Garbage ends this connection with an error; only a panic or
            // a hang would be a failure.
            let _ = Server::serve_stream(theirs, &opts, echo);
        });
        let iov = [IoSlice::new(&input.bytes)];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        let cmsgs: &[_] = if raw.is_empty() { &[] } else { &cmsg };
        let flags = nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
        let _ = nix::sys::socket::sendmsg::<()>(ours.as_raw_fd(), &iov, cmsgs, flags, None);
        let _ = ours.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = ours.read_to_end(&mut answer);
        drop(ours);
        // Joined by hand: the scope's own wait ends when the closure has
        // returned, before the thread has run its thread-local destructors,
        // and the leak check could catch it half-way out.
        join(server);
    });
    if input.check {
        let (client_end, server_end) = UnixStream::pair().expect("socketpair");
        std::thread::scope(|s| {
            let server = s.spawn(|| Server::serve_stream(server_end, &opts, echo));
            let mut c = Client::connect_stream(client_end, "fuzz server", &ClientOptions::new()).expect("connect");
            assert_eq!(c.call(b"ping").expect("a call after garbage"), b"ping");
            drop(c);
            join(server);
        });
    }
});
