//! The tarpc service of the `tarpc_server` and `tarpc_client` examples,
//! shared by both (feature `tarpc`). It is tarpc's own "hello world"
//! shape: nothing in it knows about shmring.

/// A greeting service.
#[tarpc::service]
pub trait World {
    /// Returns a greeting for `name`.
    async fn hello(name: String) -> String;
}
