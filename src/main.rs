//! lightcl command-line entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version") | Some("-V") => {
            println!("lightcl {}", lightcl::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "lightcl {}: the follower is not built yet; only --version is available",
                lightcl::VERSION
            );
            ExitCode::from(2)
        }
    }
}
