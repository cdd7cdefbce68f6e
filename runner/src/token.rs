//! `wilddog-runner token`: mints a token for one uid of one app.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use wilddog_server::{DEV_APP_ID, ServerConfig, mint_token};

/// Default lifetime of a minted token: one day.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// Arguments of `token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The same TOML config `serve` uses. Without it: the development app.
    #[arg(long, env = "WILDDOG_CONFIG")]
    pub config: Option<PathBuf>,
    /// The app (default: the config's only app; without a config, the development app).
    #[arg(long)]
    pub app_id: Option<String>,
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
    let app_id = match (&args.app_id, config.apps.as_slice()) {
        (Some(app), _) => app.clone(),
        (None, _) if args.config.is_none() => DEV_APP_ID.to_owned(),
        (None, [only]) => only.id.clone(),
        (None, []) => bail!("the config has no app"),
        (None, apps) => bail!(
            "the config has {} apps ({}): say which with --app-id",
            apps.len(),
            apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let token = mint_token(&config, &app_id, &args.uid, Duration::from_secs(args.ttl))
        .with_context(|| format!("minting a token for uid `{}` of app `{app_id}`", args.uid))?;
    println!("{token}");
    Ok(())
}
