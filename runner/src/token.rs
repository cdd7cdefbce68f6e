//! `wilddog-runner token`: mints a token for one uid of one app.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

/// Default lifetime of a minted token: one day.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// Arguments of `token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The same TOML config `serve` uses. Without it: the development app.
    #[arg(long, env = "WILDDOG_CONFIG")]
    pub config: Option<PathBuf>,
    /// The app (default: the development app).
    #[arg(long, default_value = DEV_APP_ID)]
    pub app_id: String,
    /// The user the token proves.
    #[arg(long)]
    pub uid: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
    pub ttl: u64,
}

/// Prints the token alone on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => ServerConfig::from_file(path)
            .with_context(|| format!("loading config {}", path.display()))?,
        None => ServerConfig::development(),
    };
    let token = mint_token(&config, &args.app_id, &args.uid, Duration::from_secs(args.ttl))
        .with_context(|| {
            format!("minting a token for uid `{}` of app `{}`", args.uid, args.app_id)
        })?;
    println!("{token}");
    Ok(())
}
