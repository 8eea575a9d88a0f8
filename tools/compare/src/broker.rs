//! The broker of a multi-node run: the `[bus]` settings its gateways share, and removing
//! what the run left in Redis or NATS afterwards.
//!
//! Every run of a broker bus gets a namespace of its own (a Redis key prefix, a NATS
//! stream and subject prefix), so that no run ever reads another's events or ids, and
//! nothing another user of the broker keeps is touched. Each run's log would stay behind
//! otherwise: a few MB per run, which NATS keeps on disk for good. The removal speaks the
//! brokers' text protocols directly (RESP, the NATS client protocol): it needs three
//! commands each, not two client libraries.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::args::{Bus, CompareArgs, RedisFanout};

/// Longest a removal may take before the run gives up on it (and says so).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys asked for per `SCAN` step.
const SCAN_COUNT: &str = "1000";

/// The bus every node of one run is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusSettings {
    /// The embedded bus: nothing to share, nothing to remove.
    Memory,
    /// Redis, every key under `prefix`.
    Redis {
        /// Server URL.
        url: String,
        /// Key prefix of this run.
        prefix: String,
        /// How events reach the nodes.
        fanout: RedisFanout,
    },
    /// NATS JetStream: the stream `stream`, capturing subjects under `subject_prefix`.
    Nats {
        /// Server URL.
        url: String,
        /// Stream of this run.
        stream: String,
        /// Subject prefix of this run.
        subject_prefix: String,
    },
}

impl BusSettings {
    /// Settings for `bus` with a namespace no other run uses: `compare-` and 16 random hex
    /// digits, legal as a Redis prefix, a stream name and a subject token alike.
    pub fn fresh(bus: Bus, args: &CompareArgs) -> Self {
        let namespace = format!("compare-{:016x}", rand::random::<u64>());
        match bus {
            Bus::Memory => Self::Memory,
            Bus::Redis => Self::Redis {
                url: args.redis_url.clone(),
                prefix: namespace,
                fanout: args.redis_fanout,
            },
            Bus::Nats => Self::Nats {
                url: args.nats_url.clone(),
                stream: namespace.clone(),
                subject_prefix: namespace,
            },
        }
    }

    /// Whether a broker is involved.
    pub fn is_broker(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// The broker and the run's namespace in it, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "the memory bus".to_owned(),
            Self::Redis { url, prefix, .. } => format!("redis at {url} (prefix {prefix})"),
            Self::Nats { url, stream, .. } => format!("nats at {url} (stream {stream})"),
        }
    }

    /// The `backend` line of `[bus]` and the backend's own table, appended to `config`
    /// right after the other keys of `[bus]`. Nothing for the memory bus: its config stays
    /// what it always was.
    pub fn append_toml(&self, config: &mut String) {
        // A JSON string is a valid TOML basic string (same escapes), and URLs may hold
        // characters a plain quote would not protect.
        let quote = |text: &str| serde_json::Value::from(text).to_string();
        match self {
            Self::Memory => {}
            Self::Redis {
                url,
                prefix,
                fanout,
            } => {
                let _ = write!(
                    config,
                    "backend = \"redis\"\n\n[bus.redis]\nurl = {}\nprefix = {}\nfanout = \"{}\"\n",
                    quote(url),
                    quote(prefix),
                    fanout.name()
                );
            }
            Self::Nats {
                url,
                stream,
                subject_prefix,
            } => {
                let _ = write!(
                    config,
                    "backend = \"nats\"\n\n[bus.nats]\nurl = {}\nstream = {}\nsubject_prefix = {}\n",
                    quote(url),
                    quote(stream),
                    quote(subject_prefix)
                );
            }
        }
    }

    /// Removes the run's namespace from the broker: every Redis key under the prefix, or
    /// the NATS stream. Call it once no node runs any more, or a node would create it anew.
    ///
    /// # Errors
    /// If the broker cannot be reached or refuses; the namespace is then left behind.
    pub async fn remove_namespace(&self) -> anyhow::Result<()> {
        let removal = async {
            match self {
                Self::Memory => Ok(()),
                Self::Redis { url, prefix, .. } => remove_redis_keys(url, prefix).await,
                Self::Nats { url, stream, .. } => remove_nats_stream(url, stream).await,
            }
        };
        tokio::time::timeout(REMOVE_TIMEOUT, removal)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REMOVE_TIMEOUT:?}")))
            .with_context(|| format!("removing the run's namespace from {}", self.describe()))
    }
}

/// What a broker URL names: `scheme://[user[:password]@]host[:port][/path]`.
#[derive(Debug, PartialEq, Eq)]
struct BrokerUrl {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    path: String,
}

impl BrokerUrl {
    /// Parses `url` of scheme `scheme`, with `default_port` when it names none.
    fn parse(url: &str, scheme: &str, default_port: u16) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .with_context(|| format!("{url:?}: only {scheme}:// URLs (no TLS) are supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (user, password) = match credentials.map(|c| c.split_once(':')) {
            None => (None, None),
            Some(None) => (credentials.map(str::to_owned), None),
            Some(Some((user, password))) => (
                (!user.is_empty()).then(|| user.to_owned()),
                Some(password.to_owned()),
            ),
        };
        let (host, port) = match address.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .with_context(|| format!("{url:?}: no ']' after an IPv6 address"))?;
                (host, after.strip_prefix(':'))
            }
            None => match address.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("{url:?}: bad port {port:?}"))?,
            None => default_port,
        };
        anyhow::ensure!(!host.is_empty(), "{url:?}: no host");
        Ok(Self {
            host: host.to_owned(),
            port,
            user,
            password,
            path: path.to_owned(),
        })
    }

    async fn connect(&self) -> anyhow::Result<BufReader<TcpStream>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        Ok(BufReader::new(tcp))
    }
}

/// `SCAN`s the keys under `prefix` and `UNLINK`s them.
async fn remove_redis_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let target = BrokerUrl::parse(url, "redis", 6379)?;
    let mut redis = Resp(target.connect().await?);
    if let Some(password) = &target.password {
        match &target.user {
            Some(user) => redis.command(&["AUTH", user, password]).await?,
            None => redis.command(&["AUTH", password]).await?,
        }
        redis.status().await?;
    }
    if !target.path.is_empty() {
        redis.command(&["SELECT", &target.path]).await?;
        redis.status().await?;
    }
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor = "0".to_owned();
    loop {
        redis
            .command(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", SCAN_COUNT])
            .await?;
        anyhow::ensure!(
            redis.array_len().await? == 2,
            "SCAN: not a [cursor, keys] reply"
        );
        cursor = redis.bulk().await?;
        let count = redis.array_len().await?;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(redis.bulk().await?);
        }
        if !keys.is_empty() {
            let mut unlink = vec!["UNLINK"];
            unlink.extend(keys.iter().map(String::as_str));
            redis.command(&unlink).await?;
            redis.integer().await?;
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}

/// `text` with Redis glob characters escaped, to match literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Redis connection, RESP2: commands out, the replies they were sent for read back field
/// by field (the removal knows the shape of every reply it waits for).
struct Resp(BufReader<TcpStream>);

impl Resp {
    async fn command(&mut self, parts: &[&str]) -> anyhow::Result<()> {
        let mut out = format!("*{}\r\n", parts.len());
        for part in parts {
            let _ = write!(out, "${}\r\n{part}\r\n", part.len());
        }
        self.0.get_mut().write_all(out.as_bytes()).await?;
        Ok(())
    }

    /// One reply line without its CRLF; an error reply (`-…`) is an error.
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.0.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if let Some(error) = line.strip_prefix('-') {
            bail!("redis: {error}");
        }
        Ok(line)
    }

    async fn status(&mut self) -> anyhow::Result<()> {
        let line = self.line().await?;
        anyhow::ensure!(line.starts_with('+'), "expected a status, got {line:?}");
        Ok(())
    }

    async fn integer(&mut self) -> anyhow::Result<i64> {
        let line = self.line().await?;
        line.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("expected an integer, got {line:?}"))
    }

    async fn array_len(&mut self) -> anyhow::Result<usize> {
        let line = self.line().await?;
        line.strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("expected an array, got {line:?}"))
    }

    async fn bulk(&mut self) -> anyhow::Result<String> {
        let line = self.line().await?;
        let len: usize = line
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("expected a bulk string, got {line:?}"))?;
        let mut bytes = vec![0; len + 2];
        self.0.read_exact(&mut bytes).await?;
        bytes.truncate(len);
        String::from_utf8(bytes).context("a key that is not UTF-8")
    }
}

/// Deletes the JetStream stream `stream` (`$JS.API.STREAM.DELETE`): its messages and
/// consumers go with it. A stream that does not exist (the run never got to create it)
/// is not an error.
async fn remove_nats_stream(url: &str, stream: &str) -> anyhow::Result<()> {
    let target = BrokerUrl::parse(url, "nats", 4222)?;
    let mut nats = target.connect().await?;
    let mut line = String::new();
    nats.read_line(&mut line).await?;
    anyhow::ensure!(line.starts_with("INFO "), "not a NATS server: {line:?}");
    let mut connect = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "name": "streamgate-compare",
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
    });
    // `nats://user:password@…`, or a token alone: `nats://token@…`.
    match (&target.user, &target.password) {
        (Some(user), Some(password)) => {
            connect["user"] = user.as_str().into();
            connect["pass"] = password.as_str().into();
        }
        (Some(token), None) | (None, Some(token)) => {
            connect["auth_token"] = token.as_str().into();
        }
        (None, None) => {}
    }
    let inbox = format!("_INBOX.{stream}");
    let request = format!(
        "CONNECT {connect}\r\nSUB {inbox} 1\r\nPUB $JS.API.STREAM.DELETE.{stream} {inbox} 0\r\n\r\n"
    );
    nats.get_mut().write_all(request.as_bytes()).await?;
    loop {
        line.clear();
        if nats.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let text = line.trim_end();
        if text == "PING" {
            nats.get_mut().write_all(b"PONG\r\n").await?;
        } else if let Some(error) = text.strip_prefix("-ERR") {
            bail!("nats: {}", error.trim());
        } else if let Some(header) = text.strip_prefix("MSG ") {
            let len: usize = header
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("bad MSG line {text:?}"))?;
            let mut body = vec![0; len + 2];
            nats.read_exact(&mut body).await?;
            body.truncate(len);
            return stream_delete_outcome(&body);
        }
    }
}

/// The answer to `$JS.API.STREAM.DELETE`: success, or "not found" (nothing to remove).
fn stream_delete_outcome(body: &[u8]) -> anyhow::Result<()> {
    let reply: serde_json::Value =
        serde_json::from_slice(body).context("reading the JetStream reply")?;
    if reply["success"] == true {
        return Ok(());
    }
    match reply.get("error") {
        Some(error) if error["code"] == 404 => Ok(()),
        Some(error) => bail!("jetstream: {error}"),
        None => bail!("jetstream: unexpected reply {reply}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn args(argv: &[&str]) -> CompareArgs {
        Cli::try_parse_from(std::iter::once("compare").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn every_run_gets_a_namespace_of_its_own() {
        let args = args(&["--redis-url", "redis://10.0.0.1:6380"]);
        let (a, b) = (
            BusSettings::fresh(Bus::Redis, &args),
            BusSettings::fresh(Bus::Redis, &args),
        );
        assert_ne!(a, b);
        let BusSettings::Redis { url, prefix, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(url, "redis://10.0.0.1:6380");
        assert!(
            prefix.starts_with("compare-") && prefix.len() == 24,
            "{prefix}"
        );
        let nats = BusSettings::fresh(Bus::Nats, &args);
        let BusSettings::Nats {
            stream,
            subject_prefix,
            ..
        } = &nats
        else {
            panic!("{nats:?}")
        };
        assert_eq!(stream, subject_prefix);
        assert!(stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(BusSettings::fresh(Bus::Memory, &args), BusSettings::Memory);
    }

    #[test]
    fn the_toml_names_the_backend_and_its_table() {
        let mut config = String::new();
        BusSettings::Memory.append_toml(&mut config);
        assert!(config.is_empty());
        BusSettings::Redis {
            url: "redis://u:p\"w@h:1/2".to_owned(),
            prefix: "compare-1".to_owned(),
            fanout: RedisFanout::Xread,
        }
        .append_toml(&mut config);
        assert_eq!(
            config,
            "backend = \"redis\"\n\n[bus.redis]\nurl = \"redis://u:p\\\"w@h:1/2\"\n\
             prefix = \"compare-1\"\nfanout = \"xread\"\n"
        );
        let mut config = String::new();
        BusSettings::Nats {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "compare-2".to_owned(),
            subject_prefix: "compare-2".to_owned(),
        }
        .append_toml(&mut config);
        assert!(
            config.starts_with("backend = \"nats\"\n\n[bus.nats]\n"),
            "{config}"
        );
        assert!(config.contains("stream = \"compare-2\"\n"), "{config}");
    }

    #[test]
    fn broker_urls() {
        let url = BrokerUrl::parse("redis://127.0.0.1:6379", "redis", 1).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 6379));
        assert_eq!(
            (url.user, url.password, url.path.as_str()),
            (None, None, "")
        );
        let url = BrokerUrl::parse("redis://alice:s3cret@cache/3", "redis", 6379).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("cache", 6379));
        assert_eq!(url.user.as_deref(), Some("alice"));
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        assert_eq!(url.path, "3");
        let url = BrokerUrl::parse("redis://:pw@[::1]:7000", "redis", 6379).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 7000));
        assert_eq!((url.user, url.password.as_deref()), (None, Some("pw")));
        let url = BrokerUrl::parse("redis://[::1]", "redis", 6379).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 6379));
        let url = BrokerUrl::parse("nats://token@n1", "nats", 4222).unwrap();
        assert_eq!((url.user.as_deref(), url.port), (Some("token"), 4222));
        assert!(BrokerUrl::parse("rediss://h:1", "redis", 1).is_err());
        assert!(BrokerUrl::parse("redis://h:port", "redis", 1).is_err());
    }

    #[test]
    fn glob_characters_match_literally() {
        assert_eq!(glob_escape("compare-0a"), "compare-0a");
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }

    #[test]
    fn a_stream_that_was_never_created_counts_as_removed() {
        assert!(stream_delete_outcome(br#"{"type":"x","success":true}"#).is_ok());
        assert!(stream_delete_outcome(
            br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#
        )
        .is_ok());
        let error = stream_delete_outcome(br#"{"error":{"code":503,"description":"no"}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("503"), "{error}");
    }
}
