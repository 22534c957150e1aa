//! Fuzz target `rpc_handshake`: a real server, fed arbitrary bytes as a
//! client's handshake, optionally with file descriptors attached.
//!
//! One server runs for the whole fuzzing session on a UNIX socket in the
//! temporary directory. Each input connects, sends its bytes (with
//! zero to three file descriptors by `SCM_RIGHTS`: a pipe end, a memfd),
//! closes its writing side and reads the answer to the end. Afterwards a
//! well-behaved client must still be served: garbage ends only its own
//! connection, never the server, and nothing panics (a panic in a
//! connection thread would abort the process under libFuzzer).
#![no_main]

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmring_rpc::{Addr, Client, ClientOptions, Server, ServerOptions};

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    /// How many descriptors to attach to the first write (0 to 3).
    fds: u8,
    /// Check the server with a real client after this input.
    check: bool,
}

/// The server's address; it serves an echo from a thread for the whole run.
fn server() -> &'static Addr {
    static ADDR: OnceLock<Addr> = OnceLock::new();
    ADDR.get_or_init(|| {
        // A socket file (not a directory), so CI's clean-up of
        // shmring-fuzz-* files removes it.
        let addr = Addr::Unix(std::env::temp_dir().join(format!("shmring-fuzz-rpc-{}.sock", std::process::id())));
        let server = Server::bind(&addr, &ServerOptions::new().ring_capacity(4096)).expect("bind");
        std::thread::spawn(move || server.serve(|req: &[u8]| req.to_vec()));
        addr
    })
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

fuzz_target!(|input: Input| {
    let addr = server();
    let Addr::Unix(path) = addr else { unreachable!() };
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
    let fds = descriptors(input.fds);
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(&input.bytes)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let cmsgs: &[_] = if raw.is_empty() { &[] } else { &cmsg };
    let _ = nix::sys::socket::sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, nix::sys::socket::MsgFlags::MSG_NOSIGNAL, None);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    drop(s);
    if input.check {
        let mut c = Client::connect(addr, &ClientOptions::new()).expect("a real client after garbage");
        assert_eq!(c.call(b"ping").expect("a call after garbage"), b"ping");
    }
});
