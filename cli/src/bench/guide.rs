//! What `shmring bench --help` says about each row and how to read the table.

pub(crate) const READING_GUIDE: &str = "\
WHAT RUNS
  Every row is one case: this program starts a second copy of itself, the two
  exchange messages through one transport, and the first copy measures. With two
  or more CPUs the two processes are pinned to two different CPUs. Each case first
  runs unmeasured for the warm-up time (page faults, caches, clock speed).

PING-PONG ROWS (mode spin, park or blocking)
  One process sends a message, the other sends it straight back, the first waits
  for it and sends the next. 'rtt p50' and 'rtt p99' are the median and the 99th
  percentile round-trip time (ns, µs, ms); one-way latency is about half of it.
  Lower is better.
    spin      both processes busy-poll shared memory: fastest, keeps two CPUs busy
    park      both processes sleep in the kernel until woken (futex, semaphore
              or signal wait)
    blocking  the ordinary blocking calls of a kernel transport
  'cache-line', 'futex' and 'semaphore' pass one 8-byte word with no ring around
  it: they are the floors for spin, for park with shmring's futex notifier (row
  'shmring') and for park with its semaphore notifier (row 'shmring-sem').
  shmring cannot beat them; the gap is the cost of the ring (records, checks,
  waiting policy). 'semaphore' posts and waits on two process-shared POSIX
  semaphores (sem_init with pshared 1, sem_post, sem_timedwait).
  'shmring-sem' is the 'shmring' park row with rings created for the semaphore
  notifier (SpscOptions::notifier(NotifierKind::Semaphore)): both processes
  sleep on process-shared semaphores instead of futexes. Compare it with
  'semaphore', as 'shmring' park with 'futex'.
  'signal' queues a real-time signal (SIGRTMIN) with sigqueue, its value the
  message's number; the 64 B message itself lies in a page both processes map,
  one line each way. The signal is blocked in both processes and taken with
  sigwaitinfo (no handler runs): a round trip is two sigqueue calls and two
  waits, each waking a sleeping process.
  'shmring' is the single-producer single-consumer ring; 'shmring-mpmc' is the
  multi-producer multi-consumer ring (fixed-size slots) used by one producer and
  one consumer. The gap between the two rows is mostly the price of the MPMC
  slot protocol (a compare-and-swap and a sequence word per message), but not
  only: in spin mode the SPSC producers also push each message to the shared
  cache (demote), and the SPSC stream ring holds more messages (1 MiB against
  1024 slots).

STREAM ROWS (mode stream)
  One process writes messages as fast as the transport accepts them; the other
  reads them and checks every sequence number and the final count. 'msgs/s' is
  messages per second, 'bytes/s' payload bytes per second (KiB, MiB, GiB are
  powers of 1024). Higher is better. Kernel transports (pipe, fifo, unix-socket,
  tcp-loopback, posix-mq, sysv-msgq) make one system call per message on each
  side, and the reader copies each message into its buffer.
  shmring sends one record per call too and its reader reads each message where
  it lies in the ring, without copying it out (zero-copy). Every reader, of every
  transport, reads every payload byte once (a checksum). The shmring 8 B row
  batches: runs of 512 records written in place per publish (grant_records), and
  everything available per receive.
  'file' appends each 64 B message with one write (O_APPEND) to a regular file
  in a private temporary directory; the reader polls, one read per message (a
  read of 0 bytes means nothing new yet), so it needs two CPUs like the spin
  rows. Every 4 MiB it punches what it has read out of the file, which keeps
  the file small however long the run.

RPC ROWS (transports rpc-shm, rpc-shm-async, rpc-unix, rpc-tcp)
  shmring-rpc calls on one connection: the second process runs a Server (a
  thread per client) whose handler sends each request back as the reply, and
  the first process is the client.
    rpc-shm        blocking Client; requests and replies go through two
                   shared-memory rings, and both sides busy-poll them
    rpc-shm-async  AsyncClient on a single-threaded tokio runtime, same server;
                   after each request it polls the ring for 5 µs, then sleeps
                   until the server rings its doorbell
    rpc-unix       blocking Client, frames over the server's UNIX socket
    rpc-tcp        blocking Client, frames over TCP on 127.0.0.1
  Mode 'call': one call at a time, request and reply both as large as the
  payload. 'rtt p50' and 'rtt p99' are per call, timed like the ping-pong rows;
  lower is better. Next to the raw rows at 64 B (shmring spin, unix-socket and
  tcp-loopback blocking) the difference is the cost of the RPC layer: frame
  headers, call ids, deadlines, and a fresh buffer for every reply.
  Mode '64-in-flight': 64 B calls with 64 of them outstanding on the one
  connection, so that client and server work at the same time. The blocking
  client pipelines (Client::call_all with a window of 64); the async client
  runs 64 tasks, each calling in a loop. 'msgs/s' is calls answered per
  second, 'bytes/s' the request payload per second (the replies carry as much
  back). Higher is better.
  Every reply is checked against its request. The shared-memory rows need two
  CPUs, like the spin rows: the server busy-polls.

TARPC ROWS (rpc-tarpc-shm, rpc-tarpc-unix, rpc-tarpc-tcp, rpc-tarpc-inmemory;
only in builds with the cargo feature 'tarpc')
  tarpc calls of an echo service whose argument and result are bytes::Bytes
  (bincode), the client on a single-threaded tokio runtime, the server on a
  multi-threaded tokio runtime in the second process, one worker per CPU it
  may use (one when pinned: two workers on one CPU would take turns).
    rpc-tarpc-shm       shmring-rpc's tarpc transport: each message one frame
                        through shared-memory rings (both sides poll a short
                        while, then sleep until woken)
    rpc-tarpc-unix      tarpc's own transport over a UNIX socket
    rpc-tarpc-tcp       tarpc's own transport over TCP on 127.0.0.1
    rpc-tarpc-inmemory  tarpc's in-memory channel, the server on the client's
                        own runtime, no second process: the cost of tarpc itself
  Modes as for the RPC rows: 'call' at 64 B and 1 MiB, '64-in-flight' with 64
  tasks calling at once. Every reply is checked against its request.

HTTP AND GRPC ROWS (http-shm, http-unix, http-tcp with the cargo feature
'http'; grpc-shm, grpc-tcp with 'grpc')
  An echo service in the second process, on a multi-threaded tokio runtime
  with one worker per CPU it may use; the client on a single-threaded one.
    http-shm   hyper HTTP/1.1 over shmring-rpc's ShmStream: two shared-memory
               rings; each side polls them a while (longer while the
               connection is busy), then sleeps until woken
    http-unix  the same hyper client and server over a plain UNIX socket
    http-tcp   the same over TCP on 127.0.0.1 (TCP_NODELAY)
    grpc-shm   tonic unary calls over ShmStream (HTTP/2)
    grpc-tcp   tonic unary calls over tonic's own TCP
  Each HTTP request is a POST whose 64 B body comes back as the response's
  body; each caller has an HTTP/1.1 connection of its own (HTTP/1.1 does not
  multiplex), so 64 in flight is 64 connections. All gRPC calls share one
  HTTP/2 connection. Modes as for the RPC rows: 'call' at 64 B, and
  '64-in-flight'. Every reply is checked against its request.

PEER ROWS (iceoryx2, iceoryx2-request-response, ipc-channel; only in builds
with the cargo feature 'peers')
  The libraries one would pick instead of shmring, between the same two
  processes, with the same messages and checks:
    iceoryx2     publish-subscribe, one service each way, [u8] samples loaned,
                 written and sent, received in place; 'spin' busy-polls
                 receive; 'blocking' adds an event service each way: the
                 sender notifies, the receiver waits on its listener. iceoryx2 keeps its global management file in
                 /dev/shm (iox2_*) after the run, by its own design.
    iceoryx2-request-response
                 a client here sends each ping as a request, the server in
                 the peer answers with the pong as its response; both
                 busy-poll ('spin' only: no streams).
    ipc-channel  byte channels (IpcBytesSender/IpcBytesReceiver) set up
                 through a one-shot server; 'blocking' calls recv, 'spin'
                 busy-polls try_recv.
  Modes: 64 B ping-pong ('spin'; 'blocking' for iceoryx2 and ipc-channel) and
  8 B and 64 B streams, one message per call.

READING THE TABLE
  '-' marks a column that does not apply to the row. A number in brackets after
  a transport points to a note under the table, for example why a row was not
  measured (a 64 KiB message is over the default limit of 8 KiB of both POSIX
  and System V message queues).
  With --format json the same rows come as objects with the keys transport, mode,
  payload_bytes, rtt_p50_ns, rtt_p99_ns, msgs_per_s, bytes_per_s; null stands
  for '-'.

  Numbers depend on the machine and on whatever else is running. On a busy or
  virtual machine, run twice and trust what repeats.";
