//! End-to-end tests of the `idyntra` binary live in `tests/`; this library is empty on purpose.
