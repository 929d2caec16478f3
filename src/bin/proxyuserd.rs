fn main() -> std::process::ExitCode {
    proxyuserd::daemon::main()
}
