//! The `henb-update` binary: the command line of [`henb_update::cli`].

fn main() -> std::process::ExitCode {
    henb_update::cli::main()
}
