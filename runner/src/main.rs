//! `wilddog-runner`: one binary for the project's jobs, one subcommand each.

use clap::{Parser, Subcommand};

mod demo;
mod embedded;
mod endpoint;
mod events;
mod memory;
mod pipeline_file;
mod run;
mod serve;
mod shared_media;
mod token;

/// Wilddog: one-to-one video calls. Runs the signaling server, mints tokens.
#[derive(Debug, Parser)]
#[command(name = "wilddog-runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the signaling server (WebSocket at /ws, STUN on UDP at the same port).
    Serve(serve::ServeArgs),
    /// Print a token (alone on stdout) that `serve` with the same config accepts.
    Token(token::TokenArgs),
    /// Run a call endpoint from a pipeline file (JSON events on stdout; exit code = how the call ended).
    Run(Box<run::RunArgs>),
    /// Start the server and an echo bot, place a self-check call, then serve the browser demo.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Demo(_)) {
        // Before any thread: these serve call after call (memory.rs).
        memory::limit_arenas();
    }
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
        Command::Run(args) => run::run(*args),
        Command::Demo(args) => demo::run(args),
    }
}
