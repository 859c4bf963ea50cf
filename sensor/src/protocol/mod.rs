//! Wire-protocol parsers for captured TLS plaintext.

pub mod http1;
pub mod sse;
