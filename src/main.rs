fn main() -> std::process::ExitCode {
    henb_update::cli::main()
}
