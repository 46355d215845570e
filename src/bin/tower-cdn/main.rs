//! The `tower-cdn` edge server (in progress).

fn main() {}
