fn main() -> std::process::ExitCode {
    fieldseal::cli::main()
}
