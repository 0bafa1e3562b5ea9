//! `left`: keeps a folder identical on two or more Linux machines. See the README.

#[macro_use]
mod log;
mod cli;
mod config;
mod daemon;
mod error;
mod hash;
mod net;
mod proto;
mod scan;
mod status;
mod store;
mod sync;
mod sys;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&args) {
        Ok(cli::Command::Run(o)) => o,
        Ok(cli::Command::Status(dir)) => {
            return match status::show(&dir) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    log::err(&format!("left: {e}"));
                    ExitCode::from(2)
                }
            };
        }
        Ok(cli::Command::Help) => {
            log::out(cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            log::out(&format!("left {}\n", env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            log::err(&format!("left: {msg} (see left --help)"));
            return ExitCode::from(2);
        }
    };
    log::set_level(opts.verbosity);
    match daemon::run(&opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            warn!("left: {e}");
            ExitCode::from(1)
        }
    }
}
