//! Workloads of the `stress` tool.
