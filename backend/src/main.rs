//! The `idyntra` binary.

fn main() -> std::process::ExitCode {
    idyntra_backend::cli::main()
}
