use std::{error::Error, fmt, io, net::SocketAddr, path::PathBuf};

/// Why the edge server could not be configured or started.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting has a value the server cannot use.
    InvalidConfig(String),
    /// The configuration file could not be read.
    ReadConfig {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The configuration file is not valid TOML or holds an unknown or bad setting.
    ParseConfig {
        /// The file that was read.
        path: PathBuf,
        /// The parser's message, naming the line, column and setting.
        message: String,
    },
    /// A listening socket could not be bound.
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// A certificate, key or CA file could not be used, or TLS could not be set up.
    Tls(String),
    /// The built-in demo site could not be written to a temporary directory.
    DemoSite(io::Error),
    /// The SIGINT/SIGTERM handlers could not be installed.
    Signals(io::Error),
    /// A subcommand (`sign`, `public-key`) could not do its task; the message names the
    /// subcommand and what to write instead.
    Command(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(message) => write!(f, "invalid configuration: {message}"),
            Self::ReadConfig { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            Self::ParseConfig { path, message } => {
                write!(f, "bad config file {}: {message}", path.display())
            }
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Tls(message) => write!(f, "TLS: {message}"),
            Self::DemoSite(source) => write!(f, "cannot prepare the built-in demo site: {source}"),
            Self::Signals(source) => write!(f, "cannot install signal handlers: {source}"),
            Self::Command(message) => f.write_str(message),
        }
    }
}

impl Error for ServerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::ReadConfig { source, .. }
            | Self::Bind { source, .. }
            | Self::DemoSite(source)
            | Self::Signals(source) => Some(source),
            Self::InvalidConfig(_) | Self::ParseConfig { .. } | Self::Tls(_) | Self::Command(_) => {
                None
            }
        }
    }
}
