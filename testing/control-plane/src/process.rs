//! Controller processes of a test: the real binaries, started with the environment a test gives, all writing to one
//! log file the test reads. Shared by both controllers' end-to-end suites (one way to start, read, stop and wait).

use std::{path::Path, time::Duration};

/// The environment every controller process of a test gets: debug logs of our crates as text, metrics on a free
/// port. A test's own pairs come after these and win.
pub const COMMON_ENV: [(&str, &str); 3] = [
    (
        "RUST_LOG",
        "debug,kube=info,hyper=info,aws=info,tower=info,rustls=info,h2=info",
    ),
    ("LOG_FORMAT", "text"),
    ("METRICS_ADDR", "127.0.0.1:0"),
];

/// The controller processes a test started, and their common log.
#[derive(Debug)]
pub struct Controllers {
    log: tempfile::NamedTempFile,
    /// The running processes, oldest first (a test may take one out to signal or wait for it).
    pub children: Vec<tokio::process::Child>,
}

impl Default for Controllers {
    fn default() -> Self {
        Self::new()
    }
}

impl Controllers {
    /// No processes yet, an empty log.
    pub fn new() -> Self {
        Self {
            log: tempfile::NamedTempFile::new().expect("controller log file"),
            children: Vec::new(),
        }
    }

    /// Starts `binary` with [`COMMON_ENV`] and then `env` (later pairs win); stdout and stderr are appended to the
    /// common log. The process is killed when the test drops it.
    pub fn spawn<K, V>(&mut self, binary: impl AsRef<Path>, env: impl IntoIterator<Item = (K, V)>)
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log.path())
            .expect("log file");
        let mut command = tokio::process::Command::new(binary.as_ref());
        command
            .envs(COMMON_ENV)
            .envs(env)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        self.children.push(command.spawn().expect("controller starts"));
    }

    /// Everything the processes logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills every process (a crash, as far as the process can tell).
    pub async fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill().await;
        }
    }

    /// Waits for the last started process to exit by itself (a failpoint, a signal) within `limit`.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.children.last_mut().expect("a controller");
        tokio::time::timeout(limit, child.wait())
            .await
            .expect("the controller exits in time")
            .expect("wait")
    }
}

/// The back-off delays (`retry_in`) of the failed reconciles the log reports with `category`, in order.
pub fn retry_delays(log: &str, category: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| {
            l.contains("reconcile failed")
                && (l.contains(&format!("category={category} ")) || l.contains(&format!("category=\"{category}\"")))
        })
        .filter_map(|l| {
            let value = l.split("retry_in=").nth(1)?.split_whitespace().next()?;
            parse_debug_duration(value)
        })
        .collect()
}

/// A `Duration` as its `Debug` prints it (`200ms`, `1.6s`, `5s`, `900µs`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" | "us" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_read_from_failed_reconciles_of_one_category() {
        let log = "\
2026-12-01T12:00:00Z  WARN controller_runtime::backoff: reconcile failed namespace=default name=x category=AWSThrottled error=AWS CreateTags failed: RequestLimitExceeded retry_in=200ms
2026-12-01T12:00:01Z  WARN controller_runtime::backoff: reconcile failed namespace=default name=x category=AWSUnavailable error=x retry_in=7s
2026-12-01T12:00:01Z  WARN controller_runtime::backoff: reconcile failed namespace=default name=x category=\"AWSThrottled\" error=x retry_in=1.6s
2026-12-01T12:00:02Z  INFO something else retry_in=9s";
        assert_eq!(
            retry_delays(log, "AWSThrottled"),
            [Duration::from_millis(200), Duration::from_millis(1600)]
        );
        assert_eq!(retry_delays(log, "AWSUnavailable"), [Duration::from_secs(7)]);
    }
}
