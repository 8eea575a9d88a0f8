//! Benchmark scenario library.
