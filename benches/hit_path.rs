//! Hit-path benchmarks (in progress).

fn main() {}
