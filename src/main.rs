//! The `portcullis` binary: a thin shell around `portcullis_gateway::cli`.

fn main() -> std::process::ExitCode {
    portcullis_gateway::cli::main()
}
