//! Wire-protocol parsers for captured TLS plaintext.

pub mod dns;
pub mod hpack;
pub mod hpack_huffman;
pub mod http1;
pub mod http2;
pub mod mcp;
pub mod sse;
pub mod tls_hello;
