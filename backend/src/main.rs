//! The `idyntra` binary.

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// across worker threads, where glibc's malloc spent about an eighth of the server's CPU (a
/// `perf` profile of `GET /v1/sessions/{id}` under load; see docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idyntra_backend::cli::main()
}
