//! The gRPC examples' service (`proto/greeter.proto`), as tonic's build
//! tooling generates it: messages, `greeter_client::GreeterClient` and
//! `greeter_server::{Greeter, GreeterServer}`.
#![allow(missing_docs, clippy::derive_partial_eq_without_eq)]

tonic::include_proto!("greeter");
