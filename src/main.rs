fn main() -> std::process::ExitCode {
    callbridge::cli::main()
}
