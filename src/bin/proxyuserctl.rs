fn main() -> std::process::ExitCode {
    proxyuserd::ctl::main()
}
