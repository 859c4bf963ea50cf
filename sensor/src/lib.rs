//! The sensor daemon as a library: loading the kernel programs, decoding
//! their records, attributing them to processes, parsing TLS plaintext into
//! HTTP exchanges, recognising model API calls, and emitting JSON events.

pub mod agents;
pub mod blind;
pub mod bpf;
pub mod caps;
pub mod check;
pub mod config;
pub mod conntrack;
pub mod credential;
pub mod daemon;
pub mod decode;
pub mod event;
pub mod grpc;
pub mod identity;
pub mod mcp_sse;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod provider;
pub mod resolve;
pub mod session;
pub mod sharing;
pub mod sink;
pub mod stdio;
pub mod timeline;
