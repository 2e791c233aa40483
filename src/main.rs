//! The `fieldseal` binary; everything lives in the library (`fieldseal::cli`).
#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: the proxy allocates many small, short-lived buffers per
/// request across threads, where glibc's arenas cost ~7% of CPU under load (perf, P0 bench).
/// The `system-alloc` feature keeps glibc's, for heap profilers that hook it (heaptrack;
/// benches/README.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fieldseal::cli::main()
}
