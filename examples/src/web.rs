//! What the `http_server` and `http_client` examples exchange: the JSON
//! body of `POST /echo`.

use serde::{Deserialize, Serialize};

/// A note sent to `POST /echo`, and sent back with `transport` filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Any text.
    pub text: String,
    /// Any number.
    pub n: u64,
    /// The server's answer: the transport the request came over (`shm`,
    /// `unix` or `tcp`); empty in a request.
    #[serde(default)]
    pub transport: String,
}
