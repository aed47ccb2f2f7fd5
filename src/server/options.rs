//! The options of `callbridge serve`: where to listen, how deliveries are retried, and the
//! limits every request runs under. Durations read as `250ms`, `10s`, `5m`, `1h` or `30d`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// `callbridge serve` options (the configuration folder and state file are global flags).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed on stdout).
    #[arg(long, env = "CALLBRIDGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Delivery attempts before a write hook is dead-lettered.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Delay before the second delivery attempt; it doubles for each later one (with jitter).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_delay: Duration,
    /// Longest delay between two delivery attempts.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_retry_delay: Duration,
    /// HTTP tries within one delivery attempt (quick retries of 5xx, 429, timeouts).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub crm_tries: u32,
    /// How long a write hook waits for the CRM's answer before answering 202 with the delivery id.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Longest time a request may take (answered 504 after it).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub body_limit: usize,
    /// Concurrent hook and iframe requests per integrator; more are answered 429.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: u32,
    /// Deliveries sent to CRMs at the same time (over all integrators).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// How often the outbox looks for pending deliveries it was not handed (e.g. after `deliveries retry`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// On SIGTERM or Ctrl-C, how long in-flight requests and deliveries may take to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Quiet time after a configuration file changes before the tree is reloaded.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub reload_debounce: Duration,
    /// Do not watch the configuration folder (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
    /// Delivered deliveries and call states older than this are removed (checked every
    /// `--prune-interval`); pending and dead deliveries are kept. `0` keeps everything.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// How often retention runs.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub prune_interval: Duration,
}

/// Parses `250ms`, `10s`, `5m`, `1h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration (expected e.g. 250ms, 10s, 5m)"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => {
            return Err(format!("'{s}': unknown unit '{unit}' (expected ms, s, m, h or d)"));
        }
    };
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
