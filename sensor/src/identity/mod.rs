//! Who a process is: the process table and command-line masking. Container,
//! Kubernetes and workload identity build on this.

pub mod mask;
pub mod process;
